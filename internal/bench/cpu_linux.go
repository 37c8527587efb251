package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// machineCPU is the CPU time every process on this machine has spent
// since boot, in seconds, from the first line of /proc/stat: user, nice,
// system, irq, softirq and steal (time the hypervisor gave to another
// machine), not idle or iowait. Linux counts it in USER_HZ, 100 a second
// on every architecture Go supports (it is a kernel ABI constant,
// whatever the kernel's own tick).
func machineCPU() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return 0, fmt.Errorf("read /proc/stat: unexpected first line %q", line)
	}
	var ticks uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system [idle iowait] irq softirq steal
		n, err := strconv.ParseUint(string(f[i]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read /proc/stat: field %d of %q: %w", i, line, err)
		}
		ticks += n
	}
	return float64(ticks) / 100, nil
}

// selfCPU is the CPU time this process (the load generator) has spent.
func selfCPU() (float64, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	sec := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return sec(ru.Utime) + sec(ru.Stime), nil
}
