package event

import (
	"fmt"
	"testing"
)

// BenchmarkDecodeValidate is the ceiling of the JSON stage alone: split a
// body of realistic events (a full randomuser-shaped profile each, about
// 600 bytes), decode each and validate it, as ingest and the worker do.
//
//	go test -run '^$' -bench DecodeValidate ./internal/event
func BenchmarkDecodeValidate(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			evs := make([]Event, n)
			for i := range evs {
				evs[i] = validEvent()
				evs[i].EventID = fmt.Sprintf("evt-%06d", i)
			}
			body, err := AppendNDJSON(nil, evs...)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				decoded, err := Decode(body, ContentTypeNDJSON, 0)
				if err != nil {
					b.Fatal(err)
				}
				for i := range decoded {
					if errs := decoded[i].Event.Validate(i, now, DefaultMaxClockSkew); len(errs) > 0 || len(decoded[i].Errors) > 0 {
						b.Fatal(errs, decoded[i].Errors)
					}
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
