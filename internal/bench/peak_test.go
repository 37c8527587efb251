package bench

import "testing"

// TestRunPeak: the run's peak RSS is the highest VmHWM the server reported
// (before, in and between the phases, at the end), never getrusage's
// figure, which carries the peak of the process that started the server.
func TestRunPeak(t *testing.T) {
	const MB = 1 << 20 // as mb counts them
	r := Result{
		Ingest:   []IngestResult{{RSS: PhaseRSS{PeakMB: 400}}, {RSS: PhaseRSS{PeakMB: 900}}},
		Pipeline: PipelineResult{RSS: PhaseRSS{PeakMB: 950}},
		Latency:  []LatencyStats{{RSS: PhaseRSS{PeakMB: 700}}},
	}
	dFinal := Debug{PeakRSS: 600 * MB, MaxRSS: 3000 * MB}
	if got := r.runPeak(300, dFinal); got != 950 {
		t.Errorf("peak = %.0f MB, want the pipeline's 950 (getrusage's 3000 is the parent's)", got)
	}
	// Opening a grown store, or a drain between phases.
	if got := r.runPeak(1200, dFinal); got != 1200 {
		t.Errorf("peak = %.0f MB, want the 1200 outside the phases", got)
	}
	dFinal.PeakRSS = 1300 * MB // the drain after the last phase
	if got := r.runPeak(1200, dFinal); got != 1300 {
		t.Errorf("peak = %.0f MB, want the end's 1300", got)
	}
}
