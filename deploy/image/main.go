// Command image builds skyjoin's container image without Docker: a static
// binary (CGO_ENABLED=0, -tags noduckdb: no DuckDB, see docs/image.md) on
// an empty base (FROM scratch) with a CA bundle, the time zone database and
// a non-root user, written as an OCI image layout directory and, with -tar,
// as a tarball; `crane push` pushes either to a registry.
//
// The image is reproducible: every timestamp is -created (SOURCE_DATE_EPOCH
// by default, else the Unix epoch), files are in a fixed order with fixed
// owners, and the same inputs give the same digest.
//
// It lives in its own module so that go-containerregistry stays out of
// skyjoin's. Run it through scripts/image.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Where things are in the image.
const (
	binaryPath   = "/usr/local/bin/skyjoin"
	caBundlePath = "/etc/ssl/certs/ca-certificates.crt" // where crypto/x509 looks first on Linux
	zoneinfoPath = "/usr/share/zoneinfo.zip"            // Go's own zip, named by $ZONEINFO
	homeDir      = "/home/nonroot"                      // the working directory: `data` goes here
	uid          = 65532                                // "nonroot", as in distroless
)

// imageGo is the Go release that builds the image's binary, as GOTOOLCHAIN:
// the go command fetches it from the Go module proxy once, as a module, and
// builds with it whatever Go runs this program. The build machine's own Go
// (go1.26.8) has standard-library vulnerabilities reachable from skyjoin
// that go1.27.3 fixes; scripts/test checks the image's binary with
// govulncheck, standard library included (docs/image.md).
const imageGo = "go1.27.3"

// config is what an image is built from.
type config struct {
	Root     string    // the skyjoin module's directory
	GOARCH   string    // the binary's architecture (GOOS is linux)
	Version  string    // org.opencontainers.image.version and `skyjoin version`
	Revision string    // org.opencontainers.image.revision (a commit)
	Source   string    // org.opencontainers.image.source
	Created  time.Time // every timestamp in the image
	CABundle string    // a PEM file of root certificates
	Zoneinfo string    // Go's lib/time/zoneinfo.zip
	Go       string    // GOTOOLCHAIN for the build: a release such as go1.27.3, or local
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var c config
	fs.StringVar(&c.Root, "root", "../..", "the skyjoin module's directory")
	fs.StringVar(&c.GOARCH, "goarch", "amd64", "architecture of the image (Cloud Run: amd64)")
	fs.StringVar(&c.Version, "version", "dev", "version: the image label and what `skyjoin version` prints")
	fs.StringVar(&c.Revision, "revision", "", "source revision (git commit) for the label and `skyjoin version`")
	fs.StringVar(&c.Source, "source", "https://github.com/skyjoin/skyjoin", "source repository URL for the label")
	fs.StringVar(&c.CABundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM bundle of root certificates to include")
	fs.StringVar(&c.Zoneinfo, "zoneinfo", "", "time zone database zip (default: the build toolchain's $(go env GOROOT)/lib/time/zoneinfo.zip)")
	fs.StringVar(&c.Go, "go", imageGo, "the Go toolchain that builds the binary (GOTOOLCHAIN): a release, fetched from the Go module proxy once, or local for the go command's own")
	binOut := fs.String("binary", "", "also write the image's binary to this file (for govulncheck -mode=binary)")
	created := fs.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "timestamp of the image and its files, Unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
	layoutDir := fs.String("layout", "", "write the image as an OCI image layout in this directory (replaced if it holds one)")
	tarPath := fs.String("tar", "", "also write the image as a tarball (docker save format) tagged skyjoin:VERSION")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *layoutDir == "" {
		return errors.New("usage: image -layout DIR [-tar FILE] [-version V -revision COMMIT ...]")
	}
	secs := int64(0)
	if *created != "" {
		var err error
		if secs, err = strconv.ParseInt(*created, 10, 64); err != nil {
			return fmt.Errorf("-created %q: want Unix seconds", *created)
		}
	}
	c.Created = time.Unix(secs, 0).UTC()

	start := time.Now()
	tmp, err := os.MkdirTemp("", "skyjoin-image")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "skyjoin")
	if err := buildBinary(ctx, c, bin); err != nil {
		return err
	}
	built := time.Since(start)
	if *binOut != "" {
		b, err := os.ReadFile(bin)
		if err == nil {
			err = os.WriteFile(*binOut, b, 0o755)
		}
		if err != nil {
			return fmt.Errorf("-binary: %w", err)
		}
	}
	img, err := buildImage(c, bin)
	if err != nil {
		return err
	}
	if err := writeLayout(*layoutDir, img, c.Version); err != nil {
		return err
	}
	if *tarPath != "" {
		ref, err := name.NewTag("skyjoin:" + c.Version)
		if err != nil {
			return fmt.Errorf("tag the tarball: %w", err)
		}
		if err := tarball.WriteToFile(*tarPath, ref, img); err != nil {
			return fmt.Errorf("write %s: %w", *tarPath, err)
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	size, err := imageSize(img)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "image %s (linux/%s, %s): %.1f MB compressed; binary built in %s, image in %s\nlayout: %s\n",
		digest, c.GOARCH, c.Version, float64(size)/1e6, built.Round(100*time.Millisecond), (time.Since(start) - built).Round(100*time.Millisecond), *layoutDir)
	if *tarPath != "" {
		fmt.Fprintf(stdout, "tarball: %s\n", *tarPath)
	}
	return nil
}

// buildBinary builds the static binary of the image into out.
func buildBinary(ctx context.Context, c config, out string) error {
	// -w drops the debug information; the symbol table stays (about 6 MB),
	// so that govulncheck -mode=binary sees which functions the binary
	// holds: on a binary stripped with -s it can only list every
	// vulnerability of every module the binary names.
	ldflags := "-w -X github.com/skyjoin/skyjoin/internal/app.version=" + c.Version
	if c.Revision != "" {
		ldflags += " -X github.com/skyjoin/skyjoin/internal/app.revision=" + c.Revision
	}
	// -tags noduckdb -trimpath: the flags of test/static (which shares the
	// build cache when the toolchain is the same).
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "noduckdb", "-trimpath", "-ldflags", ldflags, "-o", out, "./cmd/skyjoin")
	cmd.Dir = c.Root
	cmd.Env = append(goEnv(c), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+c.GOARCH, "GOFLAGS=-mod=readonly -buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/skyjoin (CGO_ENABLED=0 -tags noduckdb, GOTOOLCHAIN=%s): %w\n%s", c.Go, err, b)
	}
	return nil
}

// goEnv is the environment of the go commands: this process's, with
// GOTOOLCHAIN set to the build's toolchain.
func goEnv(c config) []string {
	env := os.Environ()
	if c.Go != "" {
		env = append(env, "GOTOOLCHAIN="+c.Go)
	}
	return env
}

// buildImage builds the image around the binary at bin.
func buildImage(c config, bin string) (v1.Image, error) {
	zoneinfo := c.Zoneinfo
	if zoneinfo == "" {
		cmd := exec.Command("go", "env", "GOROOT")
		cmd.Dir, cmd.Env = c.Root, goEnv(c)
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("go env GOROOT (GOTOOLCHAIN=%s): %w", c.Go, err)
		}
		zoneinfo = filepath.Join(strings.TrimSpace(string(out)), "lib", "time", "zoneinfo.zip")
	}
	read := func(p string) ([]byte, error) {
		b, err := os.ReadFile(p)
		if err == nil && len(b) == 0 {
			err = fmt.Errorf("%s is empty", p)
		}
		return b, err
	}
	ca, err := read(c.CABundle)
	if err != nil {
		return nil, err
	}
	tz, err := read(zoneinfo)
	if err != nil {
		return nil, err
	}
	exe, err := read(bin)
	if err != nil {
		return nil, err
	}
	// Two layers: the base files change rarely, the binary with every build.
	base, err := layer(c.Created, []file{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:" + homeDir + ":/sbin/nologin\n")},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: caBundlePath[1:], mode: 0o644, data: ca},
		{name: "home/", mode: 0o755},
		{name: homeDir[1:] + "/", mode: 0o700, owner: uid},
		{name: "tmp/", mode: 0o1777},
		{name: "usr/", mode: 0o755},
		{name: "usr/share/", mode: 0o755},
		{name: zoneinfoPath[1:], mode: 0o644, data: tz},
	})
	if err != nil {
		return nil, err
	}
	app, err := layer(c.Created, []file{
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: binaryPath[1:], mode: 0o755, data: exe},
	})
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, base, app)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", c.GOARCH
	cf.Created = v1.Time{Time: c.Created}
	cf.Author = "skyjoin"
	for i := range cf.History {
		cf.History[i].Created = v1.Time{Time: c.Created}
	}
	created := c.Created.Format(time.RFC3339)
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", uid, uid),
		Entrypoint: []string{binaryPath},
		WorkingDir: homeDir,
		Env: []string{
			"PATH=/usr/local/bin",
			"ZONEINFO=" + zoneinfoPath,
			"SSL_CERT_FILE=" + caBundlePath,
		},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "skyjoin",
			"org.opencontainers.image.description": "user events joined with the weather, in real time (static build without DuckDB)",
			"org.opencontainers.image.source":      c.Source,
			"org.opencontainers.image.revision":    c.Revision,
			"org.opencontainers.image.version":     c.Version,
			"org.opencontainers.image.created":     created,
		},
	}
	return mutate.ConfigFile(img, cf)
}

// file is an entry of a layer; a name ending in "/" is a directory.
type file struct {
	name  string
	mode  int64
	owner int
	data  []byte
}

// layer is a gzip-compressed OCI layer of files, in their order, with every
// time set to t.
func layer(t time.Time, files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Name: f.name, Mode: f.mode, Uid: f.owner, Gid: f.owner,
			ModTime: t, Format: tar.FormatPAX,
		}
		if h.Uid == uid {
			h.Uname, h.Gname = "nonroot", "nonroot"
		}
		if strings.HasSuffix(f.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// writeLayout writes img as the only image of an OCI layout at dir, its
// reference name (in index.json) the version.
func writeLayout(dir string, img v1.Image, version string) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
			return fmt.Errorf("%s exists and is not an OCI image layout: not replacing it", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write %s: %w", dir, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": version})); err != nil {
		return fmt.Errorf("write %s: %w", dir, err)
	}
	return nil
}

// imageSize is what a registry stores and a pull downloads: the manifest,
// the config and the compressed layers.
func imageSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}
