package platform

import "testing"

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"1": 1, "512B": 512, "64KiB": 64 << 10, "256MiB": 256 << 20, "2GiB": 2 << 30, "1TiB": 1 << 40,
		"500MB": 500e6, "256mb": 256e6, " 1 GB ": 1e9, "1.5GB": 1.5e9, "0.5GiB": 512 << 20, "10kb": 10e3,
		"512Mi": 512 << 20, "1Gi": 1 << 30,
	} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "0", "0MB", "-1GB", "+1GB", "1e9", "0x10", "inf", "1.2.3GB", "lots", "1 PB", "10000000TiB", "0.0001B"} {
		if n, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", in, n)
		}
	}
}
