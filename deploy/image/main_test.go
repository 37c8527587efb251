package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"debug/buildinfo"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// maxSize bounds the image as pulled (manifest, config, compressed layers).
// It was 20.8 MB in December 2026 (the binary's layer: 20.5 MB; 52 MB uncompressed); a jump
// past this is a dependency worth a look, not a test to loosen quietly.
const maxSize = 30 << 20

// imageDirEnv names a directory that scripts/image wrote (its IMAGE_DIR),
// with VERSION=v1.2.3-test REVISION=0123456789abcdef
// SOURCE_DATE_EPOCH=1767225600: TestImage then checks that image, the one
// the script CI ships with makes, instead of building its own. scripts/test
// sets it.
const imageDirEnv = "SKYJOIN_IMAGE_DIR"

// TestImage builds the image as scripts/image does (or takes the one
// scripts/image built, from $SKYJOIN_IMAGE_DIR), reads it back from the
// OCI layout on disk, and checks its configuration and its files, and runs
// the binary inside.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds skyjoin without cgo (about 1.5 min cold; seconds once test/static has built it)")
	}
	var out, tarPath string
	if dir := os.Getenv(imageDirEnv); dir != "" {
		out, tarPath = filepath.Join(dir, "image"), filepath.Join(dir, "skyjoin-image.tar")
		t.Logf("the image scripts/image built in %s", dir)
	} else {
		dir := t.TempDir()
		out, tarPath = filepath.Join(dir, "layout"), filepath.Join(dir, "skyjoin.tar")
		var stdout bytes.Buffer
		args := []string{"-layout", out, "-tar", tarPath,
			"-version", "v1.2.3-test", "-revision", "0123456789abcdef", "-created", "1767225600"}
		start := time.Now()
		if err := run(context.Background(), args, &stdout); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s(%s)", stdout.String(), time.Since(start).Round(100*time.Millisecond))
	}

	img, desc := readLayout(t, out)
	if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != "v1.2.3-test" {
		t.Errorf("ref.name annotation %q, want the version", got)
	}

	t.Run("config", func(t *testing.T) {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
		}
		c := cf.Config
		if c.User != "65532:65532" {
			t.Errorf("user %q, want 65532:65532 (non-root)", c.User)
		}
		if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/skyjoin"}) || len(c.Cmd) != 0 {
			t.Errorf("entrypoint %q cmd %q, want [/usr/local/bin/skyjoin] and no cmd", c.Entrypoint, c.Cmd)
		}
		if c.WorkingDir != "/home/nonroot" {
			t.Errorf("working dir %q", c.WorkingDir)
		}
		if !slices.Contains(c.Env, "ZONEINFO=/usr/share/zoneinfo.zip") {
			t.Errorf("env %q lacks ZONEINFO", c.Env)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.source":   "https://github.com/skyjoin/skyjoin",
			"org.opencontainers.image.revision": "0123456789abcdef",
			"org.opencontainers.image.version":  "v1.2.3-test",
			"org.opencontainers.image.created":  "2026-01-01T00:00:00Z",
		} {
			if got := c.Labels[k]; got != want {
				t.Errorf("label %s = %q, want %q", k, got, want)
			}
		}
		if !cf.Created.Time.Equal(time.Unix(1767225600, 0)) {
			t.Errorf("created %v, want the -created time", cf.Created)
		}
	})

	t.Run("size", func(t *testing.T) {
		n, err := imageSize(img)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("image: %.1f MB compressed", float64(n)/1e6)
		if n > maxSize {
			t.Errorf("image is %d bytes, more than %d", n, maxSize)
		}
	})

	// The files of the flattened image, as a container sees them.
	files := map[string]*tar.Header{}
	data := map[string][]byte{}
	rc := mutate.Extract(img)
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + strings.TrimSuffix(h.Name, "/")
		files[name] = h
		if h.Typeflag == tar.TypeReg {
			if data[name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	rc.Close()

	t.Run("files", func(t *testing.T) {
		for name, mode := range map[string]int64{
			"/usr/local/bin/skyjoin":             0o755,
			"/etc/ssl/certs/ca-certificates.crt": 0o644,
			"/usr/share/zoneinfo.zip":            0o644,
			"/etc/passwd":                        0o644,
			"/etc/group":                         0o644,
			"/home/nonroot":                      0o700,
			"/tmp":                               0o1777,
		} {
			h := files[name]
			if h == nil {
				t.Errorf("%s is missing", name)
				continue
			}
			if h.Mode != mode {
				t.Errorf("%s mode %o, want %o", name, h.Mode, mode)
			}
			if !h.ModTime.Equal(time.Unix(1767225600, 0)) {
				t.Errorf("%s modified %v, want the -created time", name, h.ModTime)
			}
		}
		if h := files["/home/nonroot"]; h != nil && h.Uid != 65532 {
			t.Errorf("/home/nonroot is owned by %d, want 65532", h.Uid)
		}
		if h := files["/usr/local/bin/skyjoin"]; h != nil && h.Uid != 0 {
			t.Errorf("the binary is owned by %d: the user must not be able to replace it", h.Uid)
		}
		if !bytes.Contains(data["/etc/passwd"], []byte("\nnonroot:x:65532:65532:")) {
			t.Errorf("/etc/passwd has no nonroot user:\n%s", data["/etc/passwd"])
		}
		if n := bytes.Count(data["/etc/ssl/certs/ca-certificates.crt"], []byte("-----BEGIN CERTIFICATE-----")); n < 50 {
			t.Errorf("the CA bundle has %d certificates", n)
		}
		tz := data["/usr/share/zoneinfo.zip"]
		zr, err := zip.NewReader(bytes.NewReader(tz), int64(len(tz)))
		if err != nil {
			t.Fatalf("zoneinfo.zip: %v", err)
		}
		if _, err := zr.Open("Europe/Berlin"); err != nil {
			t.Errorf("zoneinfo.zip: %v", err)
		}
		var regular []string
		for name, h := range files {
			if h.Typeflag == tar.TypeReg {
				regular = append(regular, name)
			}
		}
		slices.Sort(regular)
		want := []string{"/etc/group", "/etc/passwd", "/etc/ssl/certs/ca-certificates.crt", "/usr/local/bin/skyjoin", "/usr/share/zoneinfo.zip"}
		if !slices.Equal(regular, want) {
			t.Errorf("files %q, want exactly %q", regular, want)
		}
	})

	t.Run("binary runs", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "skyjoin")
		if err := os.WriteFile(bin, data["/usr/local/bin/skyjoin"], 0o755); err != nil {
			t.Fatal(err)
		}
		// Built by the pinned release, not the build machine's Go.
		if info, err := buildinfo.ReadFile(bin); err != nil || info.GoVersion != imageGo {
			t.Errorf("the binary's Go: %v %v, want %s", info, err, imageGo)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "version")
		cmd.Env = []string{"ZONEINFO=" + filepath.Join(t.TempDir(), "none")} // as bare as scratch
		got, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("skyjoin version: %v\n%s", err, got)
		}
		if want := "skyjoin v1.2.3-test 0123456789abcdef (tags noduckdb)\n"; string(got) != want {
			t.Errorf("skyjoin version printed %q, want %q", got, want)
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		// The same inputs give the same digest (the binary is rebuilt from
		// the build cache: same flags, same bytes); with $SKYJOIN_IMAGE_DIR,
		// the program's image is the script's.
		again := filepath.Join(t.TempDir(), "layout")
		if err := run(context.Background(), []string{"-layout", again, "-version", "v1.2.3-test", "-revision", "0123456789abcdef", "-created", "1767225600"}, io.Discard); err != nil {
			t.Fatal(err)
		}
		if _, desc2 := readLayout(t, again); desc2.Digest != desc.Digest {
			t.Errorf("a second build gave %s, the first %s", desc2.Digest, desc.Digest)
		}
	})

	t.Run("tarball", func(t *testing.T) {
		// The tarball holds the same configuration and layers (its manifest
		// is rebuilt on load, in Docker's media types: another digest).
		ref, err := name.NewTag("skyjoin:v1.2.3-test")
		if err != nil {
			t.Fatal(err)
		}
		timg, err := tarball.ImageFromPath(tarPath, &ref)
		if err != nil {
			t.Fatal(err)
		}
		got, err := timg.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		want, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("the tarball's image config is %s, the layout's %s", got, want)
		}
	})
}

// readLayout opens the OCI layout at dir, which must hold one image, and
// returns the image and its descriptor in index.json.
func readLayout(t *testing.T, dir string) (v1.Image, v1.Descriptor) {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("the layout %s holds %d manifests, want 1", dir, len(im.Manifests))
	}
	img, err := p.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img, im.Manifests[0]
}
