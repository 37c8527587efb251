package weather

import (
	"container/list"
	"math"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

// kind tells current conditions from past hours: they are different values
// (a 15-minutely observation and an hourly series) and live apart.
type kind uint8

const (
	kindCurrent kind = iota
	kindPast
)

// gridKey is a request point rounded to the Service's grid.
type gridKey struct{ lat, lon int32 }

// cellKey is a provider's grid cell as it answered it, to 1e-4 degree.
type cellKey struct{ lat, lon int32 }

func cellKeyOf(w *event.Weather) cellKey {
	return cellKey{int32(math.Round(w.CellLatitude * 1e4)), int32(math.Round(w.CellLongitude * 1e4))}
}

// entryKey is a cache key: the provider's cell, the kind and the start of
// the time slot (15 minutes for current conditions, an hour for past hours)
// in Unix seconds.
type entryKey struct {
	cell cellKey
	kind kind
	t    int64
}

type centry struct {
	key     entryKey
	w       event.Weather
	expires time.Time
	size    int64
}

// entryOverhead approximates the memory of one entry besides its strings:
// the struct, the list element and the map slot.
const entryOverhead = 240

// cache is an LRU bounded by entries and bytes, with a lifetime per entry.
// It is not safe for concurrent use (the Service holds its lock).
type cache struct {
	max      int
	maxBytes int64
	entries  map[entryKey]*list.Element // of *centry
	lru      *list.List
	bytes    int64
	evicted  int64
	expired  int64
}

func newCache(max int, maxBytes int64) *cache {
	return &cache{max: max, maxBytes: maxBytes, entries: map[entryKey]*list.Element{}, lru: list.New()}
}

// get returns the entry for k if it has not expired at now.
func (c *cache) get(k entryKey, now time.Time) (*centry, bool) {
	el, ok := c.entries[k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*centry)
	if !now.Before(e.expires) {
		c.remove(el)
		c.expired++
		return nil, false
	}
	c.lru.MoveToFront(el)
	return e, true
}

func (c *cache) put(k entryKey, w event.Weather, expires time.Time) {
	size := int64(entryOverhead + len(w.Condition) + len(w.Provider))
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*centry)
		c.bytes += size - e.size
		e.w, e.expires, e.size = w, expires, size
		c.lru.MoveToFront(el)
	} else {
		c.entries[k] = c.lru.PushFront(&centry{key: k, w: w, expires: expires, size: size})
		c.bytes += size
	}
	for len(c.entries) > c.max || (c.maxBytes > 0 && c.bytes > c.maxBytes && len(c.entries) > 1) {
		c.remove(c.lru.Back())
		c.evicted++
	}
}

func (c *cache) remove(el *list.Element) {
	e := el.Value.(*centry)
	delete(c.entries, e.key)
	c.lru.Remove(el)
	c.bytes -= e.size
}
