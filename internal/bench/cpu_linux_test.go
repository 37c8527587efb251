package bench

import (
	"strings"
	"testing"
	"time"
)

// The machine's CPU time counts this process's: spinning until this
// process has spent 50 ms more moves the machine's count by at least that
// much (less a tick of /proc/stat's 10 ms resolution, each side).
func TestMachineCPUCountsOurs(t *testing.T) {
	m0, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	s0, err := selfCPU()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var s1 float64
	for x := 0; s1-s0 < 0.05; x++ {
		if time.Now().After(deadline) {
			t.Fatalf("this process spent %.3f s of CPU in 30 s of spinning", s1-s0)
		}
		for i := range 1_000_000 {
			x ^= i * x
		}
		if s1, err = selfCPU(); err != nil {
			t.Fatal(err)
		}
	}
	m1, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	if m0 <= 0 || m1-m0 < s1-s0-0.02 {
		t.Errorf("machine CPU %.2f -> %.2f s while this process spent %.3f s", m0, m1, s1-s0)
	}
}

func TestMachineMarkdown(t *testing.T) {
	r := Result{Server: ServerResult{CPUSeconds: 900, BenchCPUSeconds: 150, MachineCPUSeconds: 1100, OtherCPUSeconds: 50, WallSeconds: 640}}
	md := r.Markdown()
	for _, want := range []string{"| the machine over the run (640 s) | CPU seconds |", "| the load generator | 150.0 |", "| other processes (a shared machine's other work: the figures carry it) | 50.0 |", "| every process | 1100.0 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	r.Server.CPUNote = "no /proc"
	if md := r.Markdown(); !strings.Contains(md, "| every process | not read: no /proc |") || strings.Contains(md, "other processes") {
		t.Errorf("Markdown without the machine's CPU:\n%s", md)
	}
}
