package platform

import (
	"fmt"
	"strconv"
	"strings"
)

// byteUnits are the units ParseBytes takes, longest suffix first.
var byteUnits = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"ki", 1 << 10}, {"mi", 1 << 20}, {"gi", 1 << 30}, {"ti", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"b", 1},
}

// ParseBytes parses a positive number of bytes: a number with an optional
// unit, B, KB, MB, GB, TB (powers of 1000, as DuckDB reads them) or KiB,
// MiB, GiB, TiB (powers of 1024; also as Cloud Run and Kubernetes write
// them: Ki, Mi, Gi, Ti), in any case, such as 10GiB, 500MB, 512Mi or
// 1.5GB.
func ParseBytes(s string) (int64, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	num, mult := v, 1.0
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	bad := fmt.Errorf("%q: want a positive number of bytes such as 10GiB or 500MB", s)
	if num == "" || strings.Trim(num, "0123456789.") != "" || strings.Count(num, ".") > 1 {
		return 0, bad
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n <= 0 || float64(n) > (1<<62)/mult {
			return 0, bad
		}
		return n * int64(mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || f*mult > 1<<62 || f*mult < 1 {
		return 0, bad
	}
	return int64(f * mult), nil
}
