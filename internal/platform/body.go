package platform

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/goccy/go-json/jsontext"
	jsonv2 "github.com/goccy/go-json/v2"
	"golang.org/x/sync/semaphore"
)

// BodyError is why a request body was refused: the status to answer and a
// message for the client, which names no socket address.
type BodyError struct {
	Status  int
	Message string
}

func (e *BodyError) Error() string { return e.Message }

// Write answers the error.
func (e *BodyError) Write(w http.ResponseWriter) {
	switch e.Status {
	case http.StatusRequestTimeout:
		w.Header().Set("Connection", "close")
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	WriteError(w, e.Status, e.Message, nil)
}

// ReadBody reads a request body of at most max bytes. With gzipOK, a body
// sent with Content-Encoding: gzip is decompressed, and max bounds what it
// decompresses to as well as what was sent: a gzip bomb is refused with 413
// after max bytes of output. Any other Content-Encoding is 415. A body that
// has not arrived within the server's read timeout is 408.
func ReadBody(w http.ResponseWriter, r *http.Request, max int64, gzipOK bool) ([]byte, *BodyError) {
	gz, berr := contentEncoding(r.Header, gzipOK)
	if berr != nil {
		return nil, berr
	}
	if !gz && r.ContentLength > max {
		return nil, tooLarge(max, "")
	}
	var in io.Reader = http.MaxBytesReader(w, r.Body, max)
	charge, _ := r.Context().Value(bodyChargeKey{}).(*bodyCharge)
	if !gz {
		// A body of announced length is read into a buffer of that size,
		// allocated at once: the whole length is charged before, rather
		// than byte by byte as it arrives.
		counted := in
		if r.ContentLength > 0 && r.ContentLength <= max {
			if !charge.take(r.ContentLength + 1) {
				return nil, bodyReadError(errOverBudget, max, "")
			}
		} else {
			counted = charge.reader(in)
		}
		body, err := readAll(counted, r.ContentLength)
		if err != nil {
			return nil, bodyReadError(err, max, "")
		}
		return body, nil
	}
	zr, err := gzip.NewReader(in)
	if err != nil {
		if be := bodyReadError(err, max, ""); be.Status != http.StatusBadRequest {
			return nil, be
		}
		return nil, &BodyError{http.StatusBadRequest, "body: Content-Encoding is gzip but the body is not gzip data"}
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(charge.reader(io.LimitReader(zr, max+1)))
	switch {
	case err != nil:
		if be := bodyReadError(err, max, ""); be.Status != http.StatusBadRequest {
			return nil, be
		}
		return nil, &BodyError{http.StatusBadRequest, "body: the gzip data is corrupt or cut short"}
	case n > max:
		return nil, tooLarge(max, " once decompressed")
	}
	if err := zr.Close(); err != nil {
		return nil, &BodyError{http.StatusBadRequest, "body: the gzip data is corrupt"}
	}
	return buf.Bytes(), nil
}

// contentEncoding reports whether the body is gzip, or refuses an encoding.
func contentEncoding(h http.Header, gzipOK bool) (bool, *BodyError) {
	vals := h.Values("Content-Encoding")
	var codings []string
	for _, v := range vals {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.ToLower(strings.TrimSpace(c)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	switch {
	case len(codings) == 0:
		return false, nil
	case gzipOK && len(codings) == 1 && (codings[0] == "gzip" || codings[0] == "x-gzip"):
		return true, nil
	case gzipOK:
		return false, &BodyError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q is not accepted: send gzip, or no Content-Encoding", strings.Join(vals, ", "))}
	}
	return false, &BodyError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q is not accepted here: send the body without Content-Encoding", strings.Join(vals, ", "))}
}

// readAll reads a body of the announced length (-1: unknown) in one
// allocation when the length is known.
func readAll(r io.Reader, length int64) ([]byte, error) {
	if length < 0 || length > 64<<20 {
		return io.ReadAll(r)
	}
	buf := bytes.NewBuffer(make([]byte, 0, length+1)) // +1: ReadFrom reads to EOF
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
}

// BodyBudget bounds the bytes of request bodies that the requests in
// flight hold at once: ReadBody charges each byte it reads (decompressed)
// to the request, and the request gives them back once it is answered. A
// body that does not fit is 503 with Retry-After, so that many slow or
// large bodies, even of callers with a key, cannot take the process's
// memory (they count against --http-max-conns and the rate limits, not
// against memory, otherwise).
type BodyBudget struct{ sem *semaphore.Weighted }

// NewBodyBudget returns a budget of max bytes.
func NewBodyBudget(max int64) *BodyBudget { return &BodyBudget{semaphore.NewWeighted(max)} }

// Wrap gives each request of h its account with the budget.
func (b *BodyBudget) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &bodyCharge{b: b}
		defer c.release()
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), bodyChargeKey{}, c)))
	})
}

type bodyChargeKey struct{}

// bodyCharge is what one request holds of a BodyBudget.
type bodyCharge struct {
	b *BodyBudget
	n atomic.Int64
}

var errOverBudget = errors.New("over the body budget")

// reader returns r charging what is read from it; r itself without a
// budget.
func (c *bodyCharge) reader(r io.Reader) io.Reader {
	if c == nil {
		return r
	}
	return &chargedReader{r: r, c: c}
}

// take charges n bytes at once; false, charging nothing, if they do not
// fit. Without a budget it takes anything.
func (c *bodyCharge) take(n int64) bool {
	if c == nil {
		return true
	}
	if !c.b.sem.TryAcquire(n) {
		return false
	}
	c.n.Add(n)
	return true
}

func (c *bodyCharge) release() {
	if n := c.n.Swap(0); n > 0 {
		c.b.sem.Release(n)
	}
}

type chargedReader struct {
	r io.Reader
	c *bodyCharge
}

func (cr *chargedReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	if n > 0 && !cr.c.take(int64(n)) {
		return 0, errOverBudget
	}
	return n, err
}

// bodyReadError classifies an error reading a body; the message never
// carries the error's text, which can hold socket addresses.
func bodyReadError(err error, max int64, after string) *BodyError {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.Is(err, errOverBudget):
		return &BodyError{http.StatusServiceUnavailable, "the server holds as many request bodies as it may at once: nothing was accepted; retry after Retry-After"}
	case errors.As(err, &mbe):
		return tooLarge(max, after)
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return &BodyError{http.StatusRequestTimeout, "the request body did not arrive in time; nothing was accepted: send it again"}
	}
	return &BodyError{http.StatusBadRequest, "the request body could not be read to its end; nothing was accepted"}
}

func tooLarge(max int64, after string) *BodyError {
	return &BodyError{http.StatusRequestEntityTooLarge,
		fmt.Sprintf("request body is larger than %d bytes%s: split it into smaller requests", max, after)}
}

// CheckMediaType checks a request's Content-Type against the media types a
// route takes (lower case, without parameters), and returns the media type.
// A missing Content-Type, another media type (a form, text) or a charset
// other than UTF-8 is 415.
func CheckMediaType(contentType string, accepted []string) (string, *BodyError) {
	want := strings.Join(accepted, " or ")
	if strings.TrimSpace(contentType) == "" {
		return "", &BodyError{http.StatusUnsupportedMediaType, "Content-Type is required: send " + want}
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", &BodyError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is malformed: send %s", contentType, want)}
	}
	if !slices.Contains(accepted, mt) {
		return "", &BodyError{http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not accepted here: send %s", mt, want)}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return "", &BodyError{http.StatusUnsupportedMediaType, fmt.Sprintf("charset %q is not accepted: bodies are UTF-8 (charset=utf-8, or no charset)", cs)}
	}
	return mt, nil
}

// strictJSON is how API request bodies are decoded: names are exact (no
// case folding), a name given twice, a name the type does not have and
// invalid UTF-8 are errors (the semantics of encoding/json/v2).
var strictJSON = jsonv2.RejectUnknownMembers(true)

// DecodeJSON reads a request's JSON body (see ReadBody and CheckMediaType:
// application/json, UTF-8, no Content-Encoding) into v, strictly: names
// are exact, and a name v does not have, a name given twice or invalid
// UTF-8 is a 400 naming the field. An empty body leaves v as it is when
// allowEmpty, and is a 400 otherwise.
func DecodeJSON(w http.ResponseWriter, r *http.Request, max int64, v any, allowEmpty bool) *BodyError {
	body, berr := ReadBody(w, r, max, false)
	if berr != nil {
		return berr
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return &BodyError{http.StatusBadRequest, "body: a JSON object is required"}
	}
	if _, berr := CheckMediaType(r.Header.Get("Content-Type"), []string{"application/json"}); berr != nil {
		return berr
	}
	if err := jsonv2.Unmarshal(body, v, strictJSON); err != nil {
		return &BodyError{http.StatusBadRequest, JSONErrorText(err)}
	}
	return nil
}

// JSONErrorText describes an error of a strict decode of a body as
// "field: problem", the field a dotted path (ids.0, filter).
func JSONErrorText(err error) string {
	var (
		serr *jsonv2.SemanticError
		xerr *jsontext.SyntacticError
	)
	path := func(p jsontext.Pointer) string {
		var parts []string
		for tok := range p.Tokens() {
			parts = append(parts, tok)
		}
		if len(parts) == 0 {
			return "body"
		}
		return strings.Join(parts, ".")
	}
	switch {
	case errors.As(err, &serr) && errors.Is(serr.Err, jsonv2.ErrUnknownName):
		msg := fmt.Sprintf("unknown field %q", serr.JSONPointer.LastToken())
		if parent := serr.JSONPointer.Parent(); parent != "" {
			msg += " within " + path(parent)
		}
		return msg + " (names are exact and case-sensitive)"
	case errors.As(err, &serr) && serr.GoType != nil && serr.JSONPointer != "":
		return fmt.Sprintf("%s: must be %s", path(serr.JSONPointer), goKind(serr.GoType.Kind().String()))
	case errors.As(err, &xerr) && errors.Is(xerr.Err, jsontext.ErrDuplicateName):
		return path(xerr.JSONPointer) + ": is given more than once"
	case errors.As(err, &xerr) && xerr.Err != nil && xerr.Err.Error() == "invalid UTF-8":
		return path(xerr.JSONPointer) + ": is not valid UTF-8"
	}
	msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "json: "), "jsontext: ")
	return "body: invalid JSON: " + msg
}

func goKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	}
	return "a number"
}
