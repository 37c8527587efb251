//go:build !noduckdb

package duckdb

import (
	"strings"
	"sync"
	"unique"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
)

// recentStats keeps in memory what the stats rollup needs of each record
// written above rollup_hi: the records not yet rolled up, which Stats
// otherwise reads from the hot segments and the main file's newest rows.
// Reading those was half a stats read's CPU: the last hour by country
// with 20,000 records above rollup_hi took 14.2 ms of CPU from the store
// and 6.5 ms with them from memory (BenchmarkStats), and under load the
// reads share the 2 cores with the writer and the mover
// (docs/benchmarks.md, twelfth round).
//
// It is exact or not used. floor is the seq above which it holds every
// record stored, as stored: Open sets it to the last seq (the records
// left in the hot segments are not in memory), and so does anything that
// changes stored records (a delete, a weather backfill, a failed append
// that may have committed), dropping the tuples. Stats uses it while
// floor <= rollup_hi, reading the records up to rollup_hi from the store
// and those above it from here; until the rollup has caught up with
// floor, it reads every record from the store as before.
//
// The writer appends, under wsem, once its append has committed; rollUp
// drops the tuples it has rolled up, under rollupMu, which the reads hold
// shared. A reader takes the slice under mu and reads it without: the
// tuples below its length are never written again (trim copies to a new
// array, reset starts one).
type recentStats struct {
	mu     sync.Mutex
	floor  int64
	tuples []statTuple
}

// statTuple is a record as the stats rollup sees it. The strings are
// canonical handles (unique), so that a tuple holds no record's memory.
type statTuple struct {
	seq, at    int64 // at: occurred_at in epoch microseconds, as stored
	temp       float64
	country    unique.Handle[string]
	eventType  unique.Handle[string]
	condition  unique.Handle[string]
	hasWeather bool
}

// maxRecentTuples bounds the tuples kept: the hot segments hold about
// 30,000 records each, at most MaxSegments of them, so this is reached
// only if the rollup stops keeping up, and then the reads use the store.
const maxRecentTuples = 1 << 20

// recentStatsOn is whether Stats reads the records above rollup_hi from
// memory (tests compare both ways).
var recentStatsOn = true

// reset drops the tuples: the store holds records that changed, or that
// are not in memory, up to seq floor.
func (r *recentStats) reset(floor int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.floor = max(r.floor, floor)
	r.tuples = nil
}

// add appends the records of recs at seqs[i] != 0, in seq order (the
// writer hands seqs out in batch order).
func (r *recentStats) add(recs []event.Record, seqs []int64) {
	fresh := make([]statTuple, 0, len(recs))
	for i := range recs {
		if seqs[i] == 0 {
			continue
		}
		t := statTuple{
			seq:       seqs[i],
			at:        recs[i].OccurredAt.UnixMicro(),
			country:   unique.Make(recs[i].Location.Country),
			eventType: unique.Make(recs[i].EventType),
		}
		if w := recs[i].Weather; w != nil {
			t.hasWeather, t.temp, t.condition = true, w.TemperatureC, unique.Make(w.Condition)
		}
		fresh = append(fresh, t)
	}
	if len(fresh) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.tuples)+len(fresh) > maxRecentTuples {
		r.floor, r.tuples = fresh[len(fresh)-1].seq, nil
		return
	}
	r.tuples = append(r.tuples, fresh...)
}

// trim drops the tuples of seq up to hi, rolled up.
func (r *recentStats) trim(hi int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := 0
	for k < len(r.tuples) && r.tuples[k].seq <= hi {
		k++
	}
	if k == 0 {
		return
	}
	// A copy, so that the array does not grow for ever, nor change under
	// a reader (only appends past a reader's length happen in place).
	r.tuples = append([]statTuple(nil), r.tuples[k:]...)
}

// above returns the tuples of seq above hi, and false if memory does not
// hold every record above hi.
func (r *recentStats) above(hi int64) ([]statTuple, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !recentStatsOn || r.floor > hi {
		return nil, false
	}
	k := 0
	for k < len(r.tuples) && r.tuples[k].seq <= hi {
		k++
	}
	return r.tuples[k:len(r.tuples):len(r.tuples)], true
}

// statKey is a row of Stats' aggregates by group and condition: k1 is a
// string (country) or, by time, ki (the bucket's start in epoch
// microseconds); k2 is the second key, ” for these groupings.
type statKey struct {
	k1       string
	k1Null   bool
	ki       int64
	k2       string
	cond     string
	condNull bool
}

// statAgg is what a statKey aggregates: the records, those with weather,
// and the sum, min and max of their temperature.
type statAgg struct {
	n, nw  int64
	s      float64
	mn, mx float64
}

func (a *statAgg) merge(b statAgg) {
	if b.nw > 0 {
		if a.nw == 0 {
			a.mn, a.mx = b.mn, b.mx
		} else {
			a.mn, a.mx = min(a.mn, b.mn), max(a.mx, b.mx)
		}
	}
	a.n += b.n
	a.nw += b.nw
	a.s += b.s
}

// foldMatch compares values with want as lower(value) = lower(want)
// does, remembering the answer for each distinct value.
type foldMatch struct {
	want string
	seen map[unique.Handle[string]]bool
}

func newFoldMatch(want string) foldMatch {
	return foldMatch{want: strings.ToLower(want), seen: map[unique.Handle[string]]bool{}}
}

func (f foldMatch) match(v unique.Handle[string]) bool {
	ok, seen := f.seen[v]
	if !seen {
		ok = strings.ToLower(v.Value()) == f.want
		f.seen[v] = ok
	}
	return ok
}

// aggregateTuples adds the tuples that pass q's filters to aggs, with the
// same semantics as the statement's (filterConds): country and condition
// compared lower-cased, the window in microseconds as the driver binds a
// time (floored). q is one rollupWindow accepts.
func aggregateTuples(tuples []statTuple, q *store.StatsQuery, aggs map[statKey]*statAgg) {
	var since, until int64
	hasSince, hasUntil := !q.Since.IsZero(), !q.Until.IsZero()
	if hasSince {
		since = q.Since.UnixMicro()
	}
	if hasUntil {
		until = q.Until.UnixMicro()
	}
	bucket := q.Bucket.Microseconds()
	country, condition := newFoldMatch(q.Country), newFoldMatch(q.Condition)
	local := handleGroups{}
	for i := range tuples {
		t := &tuples[i]
		if hasSince && t.at < since || hasUntil && t.at >= until {
			continue
		}
		if q.EventType != "" && t.eventType.Value() != q.EventType {
			continue
		}
		if q.Country != "" && !country.match(t.country) || q.Condition != "" && (!t.hasWeather || !condition.match(t.condition)) {
			continue
		}
		var k handleKey
		switch q.GroupBy {
		case store.GroupByCountry:
			k.country = t.country
		case store.GroupByTime:
			k.ki = t.at - ((t.at%bucket)+bucket)%bucket
		}
		if t.hasWeather {
			k.condition = t.condition
		} else {
			k.condNull = true
		}
		a := local[k]
		if a == nil {
			a = &statAgg{}
			local[k] = a
		}
		if t.hasWeather {
			if a.nw == 0 {
				a.mn, a.mx = t.temp, t.temp
			} else {
				a.mn, a.mx = min(a.mn, t.temp), max(a.mx, t.temp)
			}
			a.nw++
			a.s += t.temp
		}
		a.n++
	}
	local.into(q, aggs)
}

// handleKey is a statKey with the strings' handles (a pointer each): the
// aggregates of tuples and of the minutes in memory are summed by it and
// turned into text once a key (hashing the strings of every tuple's key
// was two thirds of aggregateTuples' time).
type handleKey struct {
	country, condition    unique.Handle[string]
	ki                    int64
	countryNull, condNull bool
}

// handleGroups are aggregates by handleKey.
type handleGroups map[handleKey]*statAgg

// merge adds a to k's aggregate.
func (g handleGroups) merge(k handleKey, a statAgg) {
	if prev := g[k]; prev != nil {
		prev.merge(a)
	} else {
		g[k] = &a
	}
}

// into adds the groups to aggs, keyed by text as q groups (the country
// only by country).
func (g handleGroups) into(q *store.StatsQuery, aggs map[statKey]*statAgg) {
	for k, a := range g {
		sk := statKey{ki: k.ki, condNull: k.condNull}
		if q.GroupBy == store.GroupByCountry {
			if sk.k1Null = k.countryNull; !sk.k1Null {
				sk.k1 = k.country.Value()
			}
		}
		if !k.condNull {
			sk.cond = k.condition.Value()
		}
		if prev := aggs[sk]; prev != nil {
			prev.merge(*a)
		} else {
			aggs[sk] = a
		}
	}
}
