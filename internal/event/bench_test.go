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
	// With properties: an order of about 230 bytes, nested 3 levels, 21
	// entries, on every event.
	order := benchOrder
	for _, props := range []bool{false, true} {
		for _, n := range []int{1, 100, 1000} {
			benchDecodeValidate(b, n, props, order)
		}
	}
}

// benchOrder is an order's properties: about 230 bytes, nested 3 levels,
// 21 entries.
var benchOrder = []byte(`{"order_id":"1001","amount":42.5,"currency":"EUR","paid":true,"items":[{"sku":"umbrella","qty":2,"price":15},` +
	`{"sku":"raincoat","qty":1,"price":12.5}],"shipping":{"method":"express","days":1,"address":{"city":"Paris","zip":"75001"}}}`)

func benchDecodeValidate(b *testing.B, n int, props bool, order []byte) {
	{
		b.Run(fmt.Sprintf("events=%d/properties=%v", n, props), func(b *testing.B) {
			evs := make([]Event, n)
			for i := range evs {
				evs[i] = validEvent()
				evs[i].EventID = fmt.Sprintf("evt-%06d", i)
				if props {
					evs[i].Properties = order
				}
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

// BenchmarkCheckProperties is the walk of one event's properties (the order
// of BenchmarkDecodeValidate: about 230 bytes, nested 3 levels, 21
// entries), which ingest and the worker each do for every event.
//
//	go test -run '^$' -bench CheckProperties ./internal/event
func BenchmarkCheckProperties(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if field, msg := checkProperties(benchOrder, lim.properties); msg != "" {
			b.Fatal(field, msg)
		}
	}
}
