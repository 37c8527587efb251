package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Batch builds one request body of n events (a JSON array, even for n == 1)
// whose sequence numbers are contiguous, first to first+n-1, so that a
// caller can account for every event of a request by its first number.
func (e *Events) Batch(buf []byte, n int) ([]byte, int64) {
	first := e.next.Add(int64(n)) - int64(n) + 1
	buf = append(buf[:0], '[')
	for i := range int64(n) {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = e.appendSeq(buf, first+i)
	}
	return append(buf, ']'), first
}

// appendSeq appends the event of sequence number n. Its occurred_at is
// the time it is made (to the microsecond, as the store keeps it), as in a
// live stream: the last hour's stats, the weather's hours and the stats
// rollup's minutes move on during a run.
func (e *Events) appendSeq(buf []byte, n int64) []byte {
	t := e.templates[n%int64(len(e.templates))]
	buf = append(buf, t[0]...)
	buf = append(buf, '"')
	buf = append(buf, e.prefix...)
	buf = strconv.AppendInt(buf, n, 10)
	buf = append(buf, '"')
	buf = append(buf, t[1]...)
	buf = append(buf, '"')
	buf = time.Now().UTC().AppendFormat(buf, "2006-01-02T15:04:05.000000Z07:00")
	buf = append(buf, '"')
	return append(buf, t[2]...)
}

// Seq is the sequence number of an event id of this run, or -1 if the id is
// not one of this run's.
func (e *Events) Seq(id string) int64 {
	s, ok := strings.CutPrefix(id, e.prefix)
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// Answer is how the server answered one POST.
type Answer struct {
	Status     int           // 0: no answer (transport error or timeout)
	RetryAfter string        // the Retry-After header, if any
	Err        error         // the transport error, if any
	Elapsed    time.Duration // from sending to the end of the body
}

// PostAnswer sends a body and returns the whole answer: the status, the
// Retry-After header and the transport error.
func (c *Client) PostAnswer(ctx context.Context, body []byte) Answer {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, "POST", c.Base+"/v1/events", bytes.NewReader(body))
	if err != nil {
		return Answer{Err: fmt.Errorf("POST /v1/events: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return Answer{Err: fmt.Errorf("POST /v1/events: %w", err), Elapsed: time.Since(start)}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	a := Answer{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Elapsed: time.Since(start)}
	if err != nil {
		a.Err = fmt.Errorf("POST /v1/events: read the answer: %w", err)
	}
	return a
}

// ProcMemory is a process's memory as Linux reports it in /proc/PID/status.
type ProcMemory struct {
	RSS  int64 // VmRSS, bytes: resident now
	HWM  int64 // VmHWM, bytes: the peak resident set
	Swap int64 // VmSwap, bytes
}

// ReadProcMemory reads /proc/PID/status of a process on this machine.
func ReadProcMemory(pid int) (ProcMemory, error) {
	var m ProcMemory
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return m, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.HWM
		case "VmSwap":
			dst = &m.Swap
		default:
			continue
		}
		f := strings.Fields(v) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("read memory of process %d: unexpected %s line %q", pid, k, strings.TrimSpace(line))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("read memory of process %d: %s: %w", pid, k, err)
		}
		*dst = n << 10
	}
	if m.HWM == 0 {
		return m, fmt.Errorf("read memory of process %d: no VmHWM in /proc/%d/status", pid, pid)
	}
	return m, nil
}
