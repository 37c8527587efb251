package event

import (
	"fmt"
	"strconv"
	"time"

	"github.com/goccy/go-json/jsontext"
)

// MinOccurredAt is the earliest occurred_at accepted. The latest is the
// receiver's clock plus the clock skew it allows (DefaultMaxClockSkew, the
// --ingest-max-clock-skew flag).
var MinOccurredAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// timeError is a problem with occurred_at found while decoding.
type timeError struct{ msg string }

func (e *timeError) Error() string { return e.msg }

const timeExample = "2026-01-14T21:00:00Z or 2026-01-14T22:00:00.250+01:00"

// unmarshalTime reads the event's one timestamp, occurred_at.
func unmarshalTime(b []byte, t *time.Time) error {
	if len(b) == 0 || b[0] != '"' {
		return &timeError{fmt.Sprintf("must be an RFC 3339 timestamp in a JSON string, such as %s; got %s", timeExample, kindName(jsontext.Value(b).Kind()))}
	}
	var (
		v   time.Time
		err error
	)
	if len(b) >= 2 && !hasEscapeOrInvalid(b[1:len(b)-1]) {
		v, err = parseRFC3339(b[1 : len(b)-1])
	} else {
		u, uerr := jsontext.AppendUnquote(nil, b)
		if uerr != nil {
			return uerr // invalid UTF-8: reported by its pointer
		}
		v, err = parseRFC3339(u)
	}
	if err != nil {
		return &timeError{err.Error()}
	}
	if v.Before(MinOccurredAt) {
		return &timeError{fmt.Sprintf("must be on or after %s, got %s", MinOccurredAt.Format(time.RFC3339), v.Format(time.RFC3339Nano))}
	}
	*t = v
	return nil
}

func hasEscapeOrInvalid(b []byte) bool {
	for _, c := range b {
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return true
		}
	}
	return false
}

// ParseRFC3339 parses a timestamp of RFC 3339's date-time grammar exactly:
// YYYY-MM-DDTHH:MM:SS, an optional fraction of one to nine digits, then Z or
// an offset +HH:MM or -HH:MM of at most 23:59. Upper-case T and Z only; no
// leap second (Go's time has none). time.Parse is looser: it takes an hour of
// one digit, an offset of +24:00 and a fraction of any length (cutting it).
func ParseRFC3339(s string) (time.Time, error) { return parseRFC3339(s) }

func parseRFC3339[T ~string | ~[]byte](s T) (time.Time, error) {
	bad := func(why string) (time.Time, error) {
		return time.Time{}, fmt.Errorf("must be an RFC 3339 timestamp such as %s; %s, got %s", timeExample, why, quoteShort(string(s)))
	}
	const base = len("2006-01-02T15:04:05")
	for i := range base {
		if i >= len(s) {
			return bad("the date is YYYY-MM-DD and the time HH:MM:SS, in digits")
		}
		c := s[i]
		switch i {
		case 4, 7:
			if c != '-' {
				return bad("the date is YYYY-MM-DD")
			}
		case 10:
			if c != 'T' {
				return bad("the date and the time are separated by an upper-case T")
			}
		case 13, 16:
			if c != ':' {
				return bad("the time is HH:MM:SS, two digits each")
			}
		default:
			if c < '0' || c > '9' {
				return bad("the date is YYYY-MM-DD and the time HH:MM:SS, in digits")
			}
		}
	}
	year, month, day := num(s[0:4]), num(s[5:7]), num(s[8:10])
	hour, min, sec := num(s[11:13]), num(s[14:16]), num(s[17:19])
	switch {
	case month < 1 || month > 12:
		return bad("the month is 01 to 12")
	case day < 1 || day > daysIn(time.Month(month), year):
		return bad("the day is out of range for the month")
	case hour > 23:
		return bad("the hour is 00 to 23")
	case min > 59:
		return bad("the minute is 00 to 59")
	case sec > 59:
		return bad("the second is 00 to 59")
	}
	rest := s[base:]
	nsec := 0
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		switch {
		case n == 1:
			return bad("a fraction of a second needs digits after the dot")
		case n-1 > 9:
			return bad("a fraction of a second has at most nine digits (nanoseconds)")
		}
		nsec = num(rest[1:n])
		for range 10 - n {
			nsec *= 10
		}
		rest = rest[n:]
	}
	loc := time.UTC
	switch {
	case len(rest) == 1 && rest[0] == 'Z':
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' && isDigits(rest[1:3]) && isDigits(rest[4:6]):
		oh, om := num(rest[1:3]), num(rest[4:6])
		switch {
		case oh > 23:
			return bad("the time zone offset's hour is at most 23")
		case om > 59:
			return bad("the time zone offset's minute is at most 59")
		}
		offset := (oh*60 + om) * 60
		if rest[0] == '-' {
			offset = -offset
		}
		if offset != 0 {
			loc = time.FixedZone("", offset)
		}
	default:
		return bad("the time ends with Z or an offset such as +01:00")
	}
	return time.Date(year, time.Month(month), day, hour, min, sec, nsec, loc), nil
}

func num[T ~string | ~[]byte](s T) int {
	n := 0
	for i := range len(s) {
		n = n*10 + int(s[i]-'0')
	}
	return n
}

func daysIn(m time.Month, year int) int {
	if m == time.February {
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	}
	return 31 - int((m-1)%7%2)
}

func isDigits[T ~string | ~[]byte](s T) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// quoteShort quotes a value for a message, cut to a readable length.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
