package enrich

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/pii"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// Core is the enrichment itself, written once for every runner of it: the
// Go worker (Worker.Process) and the Beam pipeline of the dataflow module
// call it. Decode turns broker messages into events and dead letters; Join
// looks up their weather and makes the records. What happens around it
// (store writes, acks, dead-letter publishing, retries) is the runner's.
type Core struct {
	Joiner       weather.Joiner
	MaxClockSkew time.Duration
	// RequireLocation dead-letters an event without coordinates (stage
	// validate) instead of making a record with status no_location.
	RequireLocation bool
	// OnWeatherFailure is WeatherFailureStore (the default) or
	// WeatherFailureRetry; see Config.
	OnWeatherFailure string
	// PII, if set, is applied to every record after the weather join.
	PII *pii.Policy
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Origin is where an event came from: its message, its index there and its
// JSON as sent.
type Origin struct {
	Msg   *broker.Message
	Index int
	Raw   []byte
}

// DeadLetter is one event, or one message that could not be decoded at all
// (Index -1), to dead-letter with the stage that gave up and why.
type DeadLetter struct {
	Msg    *broker.Message
	Index  int    // -1 for the whole message
	Data   []byte // the event's JSON, or the whole message
	Stage  string // decode, validate, store or enrich
	Reason string
}

// Message is the dead letter as the envelope package writes it, for the
// dead-letter topic.
func (d DeadLetter) Message(subscription string, failedAt time.Time) *broker.Message {
	return envelope.NewDeadLetter(d.Msg, d.Index, d.Data, d.Stage, d.Reason, subscription, failedAt)
}

// Batch is what the Core made of a batch of messages.
type Batch struct {
	// Now is when the batch was decoded (UTC): validation's clock and the
	// dead letters' failed_at.
	Now time.Time
	// Records: after Decode, the valid events with their ingested_at; after
	// Join, the enriched records (PII policy applied).
	Records []event.Record
	// Origins[i] is where Records[i] came from.
	Origins []Origin
	// Dead are the events and messages to dead-letter.
	Dead []DeadLetter
	// Lookups is the number of weather requests Join made (events with
	// coordinates); Unavailable and Stale count the records stored without
	// weather or with stale weather.
	Lookups, Unavailable, Stale int
}

func (c *Core) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// Decode decodes and validates the events of msgs: each valid event becomes
// a Record (its event and ingested_at) with its Origin; a message that does
// not decode (stage decode) and an event that does not decode or validate
// (stage decode or validate) become dead letters with their reason.
func (c *Core) Decode(msgs []*broker.Message) Batch {
	now := c.now().UTC()
	b := Batch{Now: now}
	for _, m := range msgs {
		in, err := envelope.DecodeEvents(m)
		if err != nil {
			b.Dead = append(b.Dead, DeadLetter{Msg: m, Index: -1, Data: m.Data, Stage: "decode", Reason: err.Error()})
			continue
		}
		ingestedAt := in.IngestedAt
		if ingestedAt.IsZero() {
			ingestedAt = now
		}
		for i := range in.Events {
			d := &in.Events[i]
			errs := d.Errors
			stage := "decode"
			if len(errs) == 0 {
				errs = d.Event.Validate(i, now, c.MaxClockSkew)
				if fe := d.Event.RequireLocation(i); c.RequireLocation && fe != nil {
					errs = append(errs, *fe)
				}
				stage = "validate"
			}
			if len(errs) > 0 {
				b.Dead = append(b.Dead, DeadLetter{Msg: m, Index: i, Data: d.Raw, Stage: stage, Reason: event.JoinErrors(errs)})
				continue
			}
			b.Records = append(b.Records, event.Record{Event: d.Event, IngestedAt: ingestedAt.UTC()})
			b.Origins = append(b.Origins, Origin{m, i, d.Raw})
		}
	}
	return b
}

// Join looks up the weather of b's records in one call to the Joiner (events
// without coordinates get status no_location), fills their enrichment and
// processed_at, and applies the PII policy. A record whose weather could not
// be had gets status unavailable with the reason; if the Core must hold such
// records (OnWeatherFailure retry, or a spent quota), Join returns an error
// wrapping ErrWeatherHeld and the weather's error, and the records must not
// be stored. Any other error (a Joiner that does not answer every request)
// fails the batch.
func (c *Core) Join(ctx context.Context, b *Batch) error {
	recs := b.Records
	if len(recs) == 0 {
		return nil
	}
	// at[i] is record i's request, -1 for none.
	reqs := make([]weather.Request, 0, len(recs))
	at := make([]int, len(recs))
	for i := range recs {
		loc := &recs[i].Location
		if !loc.HasCoordinates() {
			at[i] = -1
			continue
		}
		at[i] = len(reqs)
		reqs = append(reqs, weather.Request{Point: weather.Point{Lat: loc.Lat(), Lon: loc.Lon()}, At: recs[i].OccurredAt})
	}
	b.Lookups = len(reqs)
	results := c.Joiner.Lookup(ctx, reqs)
	if len(results) != len(reqs) {
		return fmt.Errorf("enrich: weather lookup answered %d of %d requests", len(results), len(reqs))
	}
	processedAt := c.now().UTC()
	var hold error
	b.Unavailable, b.Stale = 0, 0
	for i := range recs {
		r := &recs[i]
		r.ProcessedAt = processedAt
		if at[i] < 0 {
			r.Enrichment = event.Enrichment{Status: event.StatusNoLocation}
			continue
		}
		res := results[at[i]]
		if res.Err != nil {
			r.Enrichment = event.Enrichment{Status: event.StatusUnavailable, Error: res.Err.Error()}
			b.Unavailable++
			if hold == nil && (c.OnWeatherFailure == WeatherFailureRetry || errors.Is(res.Err, weather.ErrQuotaExhausted)) {
				hold = res.Err
			}
			continue
		}
		r.Weather = res.Weather
		r.Enrichment = event.Enrichment{Status: res.Status}
		if r.Enrichment.Status == "" {
			r.Enrichment.Status = event.StatusEnriched
		}
		if r.Enrichment.Status == event.StatusStale {
			r.Enrichment.Error = res.Reason
			b.Stale++
		}
	}
	if hold != nil {
		return fmt.Errorf("enrich: weather unavailable for %d of %d events: %w: %w",
			b.Unavailable, len(recs), ErrWeatherHeld, hold)
	}
	if c.PII != nil {
		for i := range recs {
			c.PII.Apply(&recs[i])
		}
	}
	return nil
}
