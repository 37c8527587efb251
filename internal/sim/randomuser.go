package sim

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RandomUserVersion is the API version the simulator reports in info.
const RandomUserVersion = "1.4"

// MaxResults is the most users one request returns, as randomuser.me.
const MaxResults = 5000

// randomUserFields are the top-level fields of a user, in the API's order;
// inc and exc select among them.
var randomUserFields = []string{"gender", "name", "location", "email", "login", "dob", "registered", "phone", "cell", "id", "picture", "nat"}

// simUser is one user of the population, with each top-level field already
// encoded as JSON.
type simUser struct {
	uuid   string
	nat    string
	lat    float64
	lon    float64
	fields [12]json.RawMessage // in randomUserFields order
}

// User is the part of a simulated user tests need to check what a client made
// of it.
type User struct {
	UUID, Nationality string
	Latitude          float64 // as the API prints it (4 decimals)
	Longitude         float64
}

type ruLocation struct {
	Street      ruStreet        `json:"street"`
	City        string          `json:"city"`
	State       string          `json:"state"`
	Country     string          `json:"country"`
	Postcode    json.RawMessage `json:"postcode"`
	Coordinates ruCoordinates   `json:"coordinates"`
	Timezone    ruTimezone      `json:"timezone"`
}

type ruStreet struct {
	Number int    `json:"number"`
	Name   string `json:"name"`
}

type ruCoordinates struct {
	Latitude  string `json:"latitude"`
	Longitude string `json:"longitude"`
}

type ruTimezone struct {
	Offset      string `json:"offset"`
	Description string `json:"description"`
}

func pattern(r *rand.Rand, p string) string {
	var b strings.Builder
	for _, c := range p {
		switch c {
		case '#':
			b.WriteByte(byte('0' + r.IntN(10)))
		case 'N':
			b.WriteByte(byte('1' + r.IntN(9)))
		case 'A':
			b.WriteByte(byte('A' + r.IntN(26)))
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

func pick(r *rand.Rand, s []string) string { return s[r.IntN(len(s))] }

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func yearsBetween(from, to time.Time) int {
	y := to.Year() - from.Year()
	if to.YearDay() < from.YearDay() {
		y--
	}
	return y
}

func newUUID(r *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// genUser makes user i of the population of seed: a pure function of (seed,
// i) and now (for the ages).
func genUser(seed uint64, i int, now time.Time) simUser {
	r := rand.New(rand.NewPCG(seed, mix64(uint64(i)+0x5eed)))
	n := &nationalities[r.IntN(len(nationalities))]
	pl := n.places[r.IntN(len(n.places))]
	male := r.IntN(2) == 0
	gender, title, first := "female", pick(r, n.femaleTitles), pick(r, n.female)
	portraits := "women"
	if male {
		gender, title, first, portraits = "male", pick(r, n.maleTitles), pick(r, n.male), "men"
	}
	last := pick(r, n.last)
	// Users live around the city centre, within about 8 km.
	lat := math.Round((pl.lat+(r.Float64()*2-1)*0.07)*1e4) / 1e4
	lon := math.Round((pl.lon+(r.Float64()*2-1)*0.07/math.Cos(pl.lat*math.Pi/180))*1e4) / 1e4

	var postcode json.RawMessage
	if pc := pattern(r, n.postcode); n.postcodeIsString {
		postcode = mustJSON(pc)
	} else {
		postcode = json.RawMessage(pc)
	}
	var idValue any
	if n.idPattern != "" && r.Float64() >= n.idNullShare {
		idValue = pattern(r, n.idPattern)
	}
	dob := time.Date(1946, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(60 * 365.25 * 24 * float64(time.Hour)))))
	dob = dob.Truncate(time.Millisecond)
	reg := time.Date(2002, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(20 * 365.25 * 24 * float64(time.Hour))))).Truncate(time.Millisecond)
	password := pick(r, passwords)
	salt := make([]byte, 8)
	for k := range salt {
		salt[k] = alnum[r.IntN(len(alnum))]
	}
	md := md5.Sum([]byte(password + string(salt)))
	s1 := sha1.Sum([]byte(password + string(salt)))
	s256 := sha256.Sum256([]byte(password + string(salt)))
	uuid := newUUID(r)
	pic := r.IntN(100)
	ms := func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

	u := simUser{uuid: uuid, nat: n.code, lat: lat, lon: lon}
	u.fields = [12]json.RawMessage{
		mustJSON(gender),
		mustJSON(map[string]string{"title": title, "first": first, "last": last}),
		mustJSON(ruLocation{
			Street: ruStreet{1 + r.IntN(9999), pick(r, n.streets)},
			City:   pl.city, State: pl.state, Country: n.country, Postcode: postcode,
			Coordinates: ruCoordinates{strconv.FormatFloat(lat, 'f', 4, 64), strconv.FormatFloat(lon, 'f', 4, 64)},
			Timezone:    ruTimezone{pl.tz, tzDescriptions[pl.tz]},
		}),
		mustJSON(emailPart(first) + "." + emailPart(last) + "@example.com"),
		mustJSON(map[string]string{
			"uuid": uuid, "username": pick(r, adjectives) + pick(r, animals) + strconv.Itoa(100+r.IntN(900)),
			"password": password, "salt": string(salt),
			"md5": hex.EncodeToString(md[:]), "sha1": hex.EncodeToString(s1[:]), "sha256": hex.EncodeToString(s256[:]),
		}),
		mustJSON(struct {
			Date string `json:"date"`
			Age  int    `json:"age"`
		}{ms(dob), yearsBetween(dob, now)}),
		mustJSON(struct {
			Date string `json:"date"`
			Age  int    `json:"age"`
		}{ms(reg), yearsBetween(reg, now)}),
		mustJSON(pattern(r, n.phone)),
		mustJSON(pattern(r, n.cell)),
		mustJSON(struct {
			Name  string `json:"name"`
			Value any    `json:"value"`
		}{n.idName, idValue}),
		mustJSON(map[string]string{
			"large":     fmt.Sprintf("https://randomuser.me/api/portraits/%s/%d.jpg", portraits, pic),
			"medium":    fmt.Sprintf("https://randomuser.me/api/portraits/med/%s/%d.jpg", portraits, pic),
			"thumbnail": fmt.Sprintf("https://randomuser.me/api/portraits/thumb/%s/%d.jpg", portraits, pic),
		}),
		mustJSON(n.code),
	}
	return u
}

// fieldMask returns which top-level fields to write, from inc and exc.
func fieldMask(q map[string][]string) [12]bool {
	var m [12]bool
	inc := strings.TrimSpace(first(q, "inc"))
	for i := range m {
		m[i] = inc == ""
	}
	set := func(list string, v bool) {
		for f := range strings.SplitSeq(list, ",") {
			f = strings.ToLower(strings.TrimSpace(f))
			for i, name := range randomUserFields {
				if name == f {
					m[i] = v
				}
			}
		}
	}
	if inc != "" {
		set(inc, true)
	}
	set(first(q, "exc"), false)
	return m
}

func first(q map[string][]string, k string) string {
	if v := q[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// serveRandomUser answers GET /api/ (and /api/1.4/).
func (s *Sim) serveRandomUser(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeRandomUserError(w, http.StatusMethodNotAllowed, "Method not allowed")
		return
	}
	q := r.URL.Query()
	n := 1
	if v, err := strconv.Atoi(first(q, "results")); err == nil && v > 0 {
		n = min(v, MaxResults)
	}
	page := 1
	if v, err := strconv.Atoi(first(q, "page")); err == nil && v > 0 {
		page = v
	}
	seed := first(q, "seed")
	if seed == "" {
		// A fresh seed per request, as the real API; asking again with it
		// gives the same users.
		seed = fmt.Sprintf("%016x", mix64(s.seed^mix64(s.requests.Add(1))))
	}
	pool := s.pool(first(q, "nat"))
	mask := fieldMask(q)

	rng := rand.New(rand.NewPCG(hashString(seed), uint64(page)))
	perm := rng.Perm(len(pool))
	var b bytes.Buffer
	b.Grow(n * 1200)
	b.WriteString(`{"results":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		u := &s.users[pool[perm[i%len(perm)]]]
		b.WriteByte('{')
		sep := false
		for f, raw := range u.fields {
			if !mask[f] {
				continue
			}
			if sep {
				b.WriteByte(',')
			}
			sep = true
			b.WriteByte('"')
			b.WriteString(randomUserFields[f])
			b.WriteString(`":`)
			b.Write(raw)
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
	if _, ok := q["noinfo"]; !ok {
		b.WriteString(`,"info":`)
		b.Write(mustJSON(struct {
			Seed    string `json:"seed"`
			Results int    `json:"results"`
			Page    int    `json:"page"`
			Version string `json:"version"`
		}{seed, n, page, RandomUserVersion}))
	}
	b.WriteByte('}')
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(b.Bytes())
	}
}

// pool returns the indexes of the users of the nationalities asked for (a
// comma-separated list; unknown codes are ignored, as the real API does), or
// of all users.
func (s *Sim) pool(nat string) []int {
	if nat == "" {
		return s.all
	}
	var out []int
	seen := map[string]bool{}
	for c := range strings.SplitSeq(strings.ToUpper(nat), ",") {
		c = strings.TrimSpace(c)
		if seen[c] {
			continue
		}
		seen[c] = true
		out = append(out, s.byNat[c]...)
	}
	if len(out) == 0 {
		return s.all
	}
	return out
}

func writeRandomUserError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(mustJSON(map[string]string{"error": msg}))
}

func hashString(s string) uint64 {
	h := uint64(0xcbf29ce484222325)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 0x100000001b3
	}
	return mix64(h)
}
