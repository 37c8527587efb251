package retry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

const maxDuration = time.Duration(math.MaxInt64)

func TestBackoffCeiling(t *testing.T) {
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		want    time.Duration
	}{
		{"first attempt", Backoff{Initial: time.Second, Max: time.Minute}, 1, time.Second},
		{"doubles", Backoff{Initial: time.Second, Max: time.Minute}, 4, 8 * time.Second},
		{"capped", Backoff{Initial: time.Second, Max: time.Minute}, 7, time.Minute},
		{"attempt 0 counts as 1", Backoff{Initial: time.Second, Max: time.Minute}, 0, time.Second},
		{"negative attempt counts as 1", Backoff{Initial: time.Second, Max: time.Minute}, -3, time.Second},
		{"initial above max", Backoff{Initial: time.Hour, Max: time.Minute}, 1, time.Minute},
		{"multiplier 3", Backoff{Initial: time.Second, Max: time.Hour, Multiplier: 3}, 3, 9 * time.Second},
		{"multiplier 1.5", Backoff{Initial: time.Second, Max: time.Hour, Multiplier: 1.5}, 3, 2250 * time.Millisecond},
		{"multiplier 1: constant", Backoff{Initial: time.Second, Max: time.Hour, Multiplier: 1}, 50, time.Second},
		{"multiplier below 1 means 2", Backoff{Initial: time.Second, Max: time.Hour, Multiplier: 0.5}, 3, 4 * time.Second},
		{"multiplier NaN means 2", Backoff{Initial: time.Second, Max: time.Hour, Multiplier: math.NaN()}, 3, 4 * time.Second},
		{"no initial: no wait", Backoff{Max: time.Minute}, 5, 0},
		{"overflow at attempt 1000, capped", Backoff{Initial: time.Second, Max: 30 * time.Second}, 1000, 30 * time.Second},
		{"overflow at attempt 1000, no max", Backoff{Initial: time.Second}, 1000, maxDuration},
		{"overflow at attempt 1000, multiplier 10", Backoff{Initial: time.Hour, Max: 24 * time.Hour, Multiplier: 10}, 1000, 24 * time.Hour},
		{"overflow at attempt 64, no max", Backoff{Initial: 1}, 64, maxDuration},
		{"huge initial, no max", Backoff{Initial: maxDuration / 2}, 3, maxDuration},
		{"attempt MaxInt", Backoff{Initial: time.Millisecond, Max: time.Second}, math.MaxInt, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.ceiling(tt.attempt); got != tt.want {
				t.Fatalf("ceiling(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
			if got := tt.b.jitter(tt.attempt, 0); got != 0 {
				t.Errorf("jitter(%d, 0) = %v, want 0", tt.attempt, got)
			}
			if got := tt.b.jitter(tt.attempt, 1); got != tt.want {
				t.Errorf("jitter(%d, 1) = %v, want the ceiling %v", tt.attempt, got, tt.want)
			}
			if got, want := tt.b.jitter(tt.attempt, 0.5), time.Duration(float64(tt.want)*0.5); got != want {
				t.Errorf("jitter(%d, 0.5) = %v, want %v", tt.attempt, got, want)
			}
			if got := tt.b.jitter(tt.attempt, math.Nextafter(1, 0)); got < 0 || got > tt.want {
				t.Errorf("jitter(%d, 1-ε) = %v, want within [0, %v]", tt.attempt, got, tt.want)
			}
		})
	}
}

// TestBackoffDelayFullJitter draws Delay many times: every draw is within
// [0, ceiling], and the draws cover the whole range (not only its upper
// half).
func TestBackoffDelayFullJitter(t *testing.T) {
	tests := []struct {
		b       Backoff
		attempt int
		ceiling time.Duration
	}{
		{Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, 1, 100 * time.Millisecond},
		{Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, 3, 400 * time.Millisecond},
		{Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, 1000, 5 * time.Second},
		{Backoff{Initial: time.Second}, 1000, maxDuration},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.b, tt.attempt), func(t *testing.T) {
			lo, hi := maxDuration, time.Duration(0)
			for range 2000 {
				d := tt.b.Delay(tt.attempt)
				if d < 0 || d > tt.ceiling {
					t.Fatalf("Delay(%d) = %v, want within [0, %v]", tt.attempt, d, tt.ceiling)
				}
				lo, hi = min(lo, d), max(hi, d)
			}
			// With 2000 uniform draws, the chance that none falls in the
			// lowest (or highest) tenth is 0.9^2000, about 1e-92.
			if lo > tt.ceiling/10 || hi < tt.ceiling-tt.ceiling/10 {
				t.Errorf("draws spread over [%v, %v], want close to [0, %v]", lo, hi, tt.ceiling)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	tests := []struct {
		name   string
		v      string
		want   time.Duration
		wantOK bool
	}{
		{"seconds", "120", 2 * time.Minute, true},
		{"zero", "0", 0, true},
		{"spaces", " 30 ", 30 * time.Second, true},
		{"leading zeros", "007", 7 * time.Second, true},
		{"negative", "-5", 0, true},
		{"too many seconds", "9999999999999999", maxDuration, true},
		{"more seconds than int64", "99999999999999999999999", maxDuration, true},
		{"HTTP-date in the future", date(90 * time.Second), 90 * time.Second, true},
		{"HTTP-date in the past", date(-time.Hour), 0, true},
		{"HTTP-date now", date(0), 0, true},
		{"RFC 850 date (obsolete), past", "Sunday, 06-Nov-94 08:49:37 GMT", 0, true},
		{"asctime date (obsolete), future", now.Add(time.Hour).Format(time.ANSIC), time.Hour, true},
		{"empty", "", 0, false},
		{"blank", "  ", 0, false},
		{"word", "soon", 0, false},
		{"fraction", "1.5", 0, false},
		{"plus sign", "+5", 0, false},
		{"unit", "5s", 0, false},
		{"double minus", "--5", 0, false},
		{"minus alone", "-", 0, false},
		{"date with a bad zone", "Fri, 20 Nov 2026 12:00:00 CET", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.v, now)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.v, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// hinted is an error with a server's hint.
type hinted struct {
	msg  string
	wait time.Duration
}

func (e *hinted) Error() string             { return e.msg }
func (e *hinted) RetryAfter() time.Duration { return e.wait }

var _ Hinter = (*hinted)(nil)

var (
	errTemp  = errors.New("temporary")
	errFinal = errors.New("final")
)

// TestCall runs Call with a fake Sleep that records the waits and a fixed
// jitter draw.
func TestCall(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Second}
	tests := []struct {
		name      string
		p         Policy
		errs      []error // f's results, in turn; nil past the end
		u         float64 // the jitter draw
		wantCalls int
		wantWaits []time.Duration
		wantErr   error // nil: success
	}{
		{"success at once", Policy{Backoff: b}, nil, 1, 1, nil, nil},
		{"two failures then success", Policy{Backoff: b}, []error{errTemp, errTemp}, 1, 3,
			[]time.Duration{time.Second, 2 * time.Second}, nil},
		{"full jitter", Policy{Backoff: b}, []error{errTemp, errTemp, errTemp}, 0.25, 4,
			[]time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}, nil},
		{"not retryable", Policy{Backoff: b, Retryable: func(err error) bool { return err != errFinal }},
			[]error{errTemp, errFinal, errTemp}, 1, 2, []time.Duration{time.Second}, errFinal},
		{"attempts spent", Policy{Backoff: b, MaxAttempts: 3}, []error{errTemp, errTemp, errFinal, nil}, 1, 3,
			[]time.Duration{time.Second, 2 * time.Second}, errFinal},
		{"one attempt only", Policy{Backoff: b, MaxAttempts: 1}, []error{errFinal}, 1, 1, nil, errFinal},
		{"hint longer than the backoff", Policy{Backoff: b}, []error{&hinted{"429", 7 * time.Second}}, 1, 2,
			[]time.Duration{7 * time.Second}, nil},
		{"hint shorter than the backoff", Policy{Backoff: b}, []error{&hinted{"429", 100 * time.Millisecond}}, 1, 2,
			[]time.Duration{time.Second}, nil},
		{"hint longer than the jittered backoff", Policy{Backoff: b}, []error{&hinted{"429", 800 * time.Millisecond}}, 0.5, 2,
			[]time.Duration{800 * time.Millisecond}, nil},
		{"hint bounded by Backoff.Max", Policy{Backoff: b}, []error{&hinted{"429", time.Hour}}, 1, 2,
			[]time.Duration{10 * time.Second}, nil},
		{"hint bounded by MaxHint", Policy{Backoff: b, MaxHint: time.Minute}, []error{&hinted{"429", time.Hour}}, 1, 2,
			[]time.Duration{time.Minute}, nil},
		{"hint bounded by DefaultMaxHint", Policy{Backoff: Backoff{Initial: time.Second}}, []error{&hinted{"429", time.Hour}}, 1, 2,
			[]time.Duration{DefaultMaxHint}, nil},
		{"a bound below the backoff keeps the backoff", Policy{Backoff: Backoff{Initial: 5 * time.Second}, MaxHint: time.Second},
			[]error{&hinted{"429", time.Hour}}, 1, 2, []time.Duration{5 * time.Second}, nil},
		{"hint deep in the chain", Policy{Backoff: b}, []error{fmt.Errorf("get: %w", fmt.Errorf("answer: %w", &hinted{"503", 3 * time.Second}))}, 1, 2,
			[]time.Duration{3 * time.Second}, nil},
		{"zero hint", Policy{Backoff: b}, []error{&hinted{"429", 0}}, 1, 2, []time.Duration{time.Second}, nil},
		{"no backoff: retry at once", Policy{}, []error{errTemp, errTemp}, 1, 3, []time.Duration{0, 0}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var waits, notified []time.Duration
			var attempts []int
			p := tt.p
			p.Rand = func() float64 { return tt.u }
			p.Sleep = func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return nil }
			p.OnRetry = func(_ context.Context, attempt int, err error, wait time.Duration) {
				attempts = append(attempts, attempt)
				notified = append(notified, wait)
			}
			calls := 0
			err := Call(context.Background(), p, func(ctx context.Context) error {
				calls++
				if calls <= len(tt.errs) {
					return tt.errs[calls-1]
				}
				return nil
			})
			if err != tt.wantErr { // unchanged, not wrapped
				t.Errorf("Call = %v, want %v", err, tt.wantErr)
			}
			if calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
			if fmt.Sprint(waits) != fmt.Sprint(tt.wantWaits) {
				t.Errorf("waits %v, want %v", waits, tt.wantWaits)
			}
			if fmt.Sprint(notified) != fmt.Sprint(tt.wantWaits) {
				t.Errorf("OnRetry told waits %v, want %v", notified, tt.wantWaits)
			}
			for i, a := range attempts {
				if a != i+1 {
					t.Errorf("OnRetry attempts %v, want 1, 2, ...", attempts)
					break
				}
			}
		})
	}
}

// TestCallContext: Call stops when its context ends and returns an error
// that wraps both f's last error and the context's.
func TestCallContext(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	b := Backoff{Initial: time.Second, Max: 10 * time.Second}
	tests := []struct {
		name      string
		ctx       func() (context.Context, context.CancelFunc)
		p         Policy
		f         func(ctx context.Context, cancel context.CancelFunc) error
		wantCalls int
		wantWaits int
		wantLast  error // f's last error, in the chain; nil: none
		wantCtx   error
	}{
		{"cancelled before the first call",
			func() (context.Context, context.CancelFunc) { return cancelled, func() {} },
			Policy{Backoff: b}, func(context.Context, context.CancelFunc) error { return nil },
			0, 0, nil, context.Canceled},
		{"cancelled during a call",
			func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			Policy{Backoff: b}, func(_ context.Context, cancel context.CancelFunc) error { cancel(); return errTemp },
			1, 0, errTemp, context.Canceled},
		{"cancelled during a wait",
			func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			Policy{Backoff: b, Sleep: func(ctx context.Context, d time.Duration) error { return context.Canceled }},
			func(context.Context, context.CancelFunc) error { return &hinted{"503", time.Second} },
			1, 1, &hinted{}, context.Canceled},
		{"a wait would outlast the deadline",
			func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), time.Hour)
			},
			Policy{Backoff: b, MaxHint: 3 * time.Hour},
			func(context.Context, context.CancelFunc) error { return &hinted{"429", 2 * time.Hour} },
			1, 0, &hinted{}, context.DeadlineExceeded},
		{"a not retryable error is returned as it is, even once cancelled",
			func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			Policy{Backoff: b, Retryable: func(error) bool { return false }},
			func(_ context.Context, cancel context.CancelFunc) error { cancel(); return errFinal },
			1, 0, errFinal, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			calls, waits := 0, 0
			p := tt.p
			sleep := p.Sleep
			p.Sleep = func(ctx context.Context, d time.Duration) error {
				waits++
				if sleep != nil {
					return sleep(ctx, d)
				}
				return Sleep(ctx, d)
			}
			err := Call(ctx, p, func(ctx context.Context) error {
				calls++
				return tt.f(ctx, cancel)
			})
			if calls != tt.wantCalls || waits != tt.wantWaits {
				t.Errorf("%d calls, %d waits; want %d, %d", calls, waits, tt.wantCalls, tt.wantWaits)
			}
			if tt.wantCtx == nil {
				if err != tt.wantLast {
					t.Fatalf("Call = %v, want %v unchanged", err, tt.wantLast)
				}
				return
			}
			ce, ok := errors.AsType[*ContextError](err)
			if !ok || !errors.Is(err, tt.wantCtx) {
				t.Fatalf("Call = %#v, want a *ContextError wrapping %v", err, tt.wantCtx)
			}
			switch w := tt.wantLast.(type) {
			case nil:
				if ce.Err != nil || err.Error() != tt.wantCtx.Error() {
					t.Errorf("Call = %v (last error %v), want only %v", err, ce.Err, tt.wantCtx)
				}
			case *hinted:
				if _, ok := errors.AsType[*hinted](err); !ok {
					t.Errorf("Call = %v: f's error not in the chain", err)
				}
				if !strings.Contains(err.Error(), ce.Err.Error()) || !strings.Contains(err.Error(), tt.wantCtx.Error()) {
					t.Errorf("Call = %q: want both errors in the message", err)
				}
			default:
				if !errors.Is(err, w) || ce.Err != w {
					t.Errorf("Call = %v, want %v in the chain", err, w)
				}
			}
		})
	}
}

func TestSleep(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		d    time.Duration
		want error
	}{
		{"cancelled, long wait", cancelled, time.Hour, context.Canceled},
		{"cancelled, no wait", cancelled, 0, context.Canceled},
		{"live, no wait", context.Background(), 0, nil},
		{"live, negative wait", context.Background(), -time.Second, nil},
		{"live, short wait", context.Background(), time.Nanosecond, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Sleep(tt.ctx, tt.d); err != tt.want {
				t.Fatalf("Sleep = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		want   time.Duration
		wantOK bool
	}{
		{"nil", nil, 0, false},
		{"plain", errTemp, 0, false},
		{"hinted", &hinted{"429", time.Second}, time.Second, true},
		{"wrapped", fmt.Errorf("get: %w", &hinted{"429", 2 * time.Second}), 2 * time.Second, true},
		{"joined", errors.Join(errTemp, &hinted{"429", 3 * time.Second}), 3 * time.Second, true},
		{"in a ContextError", &ContextError{Err: &hinted{"429", 4 * time.Second}, CtxErr: context.Canceled}, 4 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := RetryAfter(tt.err); got != tt.want || ok != tt.wantOK {
				t.Fatalf("RetryAfter = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
