package jetstream

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
)

// crashDirEnv tells the test binary it runs as the crash child, on that data
// dir; with crashSelfKillEnv set, the child kills itself right after an Ack.
const (
	crashDirEnv      = "SKYJOIN_JETSTREAM_CRASH_DIR"
	crashSelfKillEnv = "SKYJOIN_JETSTREAM_CRASH_SELF_KILL"
)

const (
	crashMessages     = 5000
	crashBatch        = 50
	crashSub          = "crash"
	crashKillAfter    = 2500 // published messages seen by the parent before SIGKILL
	crashSelfKillAcks = 1000 // acked messages after which a self-killing child dies
)

// TestCrashRecovery runs a child process that publishes and consumes on an
// embedded broker, kills it with SIGKILL mid-stream, reopens the data dir and
// checks that every message whose Publish returned nil is either still there
// or was acked, and that no message whose Ack returned nil comes back.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the crash test")
	}
	t.Run("KilledByParent", func(t *testing.T) { testCrash(t, false) })
	t.Run("KilledAfterAck", func(t *testing.T) { testCrash(t, true) })
}

func testCrash(t *testing.T, selfKill bool) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	if selfKill {
		cmd.Env = append(cmd.Env, crashSelfKillEnv+"=1")
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	published := map[int]bool{} // Publish returned nil
	acking := map[int]bool{}    // Ack called: may be gone
	acked := map[int]bool{}     // Ack returned nil: must be gone
	record := func(line string) error {
		kind, rest, _ := strings.Cut(line, " ")
		var into map[int]bool
		switch kind {
		case "PUB":
			into = published
		case "ACKING":
			into = acking
		case "ACK":
			into = acked
		default:
			return nil
		}
		for f := range strings.FieldsSeq(rest) {
			i, err := strconv.Atoi(f)
			if err != nil {
				return fmt.Errorf("bad line %q: %w", line, err)
			}
			into[i] = true
		}
		return nil
	}

	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		if err := record(sc.Text()); err != nil {
			t.Fatal(err)
		}
		if !selfKill && !killed && len(published) >= crashKillAfter && len(acked) > 0 {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatalf("kill child: %v", err)
			}
			killed = true
			t.Logf("SIGKILL with %d published, %d acked", len(published), len(acked))
		}
	}
	// Lines written before the kill are still in the pipe and read above.
	waitErr := cmd.Wait()
	if selfKill {
		killed = strings.Contains(fmt.Sprint(waitErr), "killed")
	}
	if !killed {
		t.Fatalf("child ended before it was killed (%d published, %d acked): %v", len(published), len(acked), waitErr)
	}
	t.Logf("after draining the child's output: %d published, %d acked", len(published), len(acked))

	b := openEmbedded(t, dir)
	// Messages the child fetched and did not ack may be recorded as pending
	// in the consumer's state: a short AckWait brings them back soon.
	sub, err := b.Subscribe(ctx, broker.TopicEvents, crashSub, broker.SubscribeOptions{AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	found := map[int]int{}
	for empty := 0; empty < 3; {
		msgs, err := sub.Fetch(ctx, 500, time.Second)
		if err != nil {
			t.Fatalf("Fetch after reopen: %v", err)
		}
		if len(msgs) == 0 {
			empty++
			continue
		}
		for _, m := range msgs {
			i, err := strconv.Atoi(string(m.Data[:5]))
			if err != nil {
				t.Fatalf("unexpected message %q", m.Data)
			}
			found[i]++
		}
		if err := sub.Ack(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}

	var lost, back []int
	for i := range published {
		if !acking[i] && found[i] == 0 {
			lost = append(lost, i)
		}
	}
	for i := range acked {
		if found[i] > 0 {
			back = append(back, i)
		}
	}
	t.Logf("after reopen: %d messages to consume (%d published and not acked)", len(found), len(published)-countIn(published, acked))
	if len(lost) > 0 {
		t.Errorf("%d messages whose Publish returned nil were lost, e.g. %v", len(lost), lost[:min(10, len(lost))])
	}
	if len(back) > 0 {
		t.Errorf("%d messages whose Ack returned nil came back, e.g. %v", len(back), back[:min(10, len(back))])
	}
}

func countIn(set, other map[int]bool) int {
	n := 0
	for i := range set {
		if other[i] {
			n++
		}
	}
	return n
}

// TestCrashChild is the child of TestCrashRecovery; it does nothing unless
// crashDirEnv is set. It publishes crashMessages messages in batches and
// consumes them, acking every other message, printing "PUB i..." after each
// Publish, "ACKING i..." before each Ack and "ACK i..." after each Ack that
// returned nil, until killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("runs as the child of TestCrashRecovery")
	}
	// A bound in case the parent dies without killing us.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b, err := Open(ctx, Config{URL: EmbeddedURL, DataDir: dir}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// A long AckWait: un-acked messages are not redelivered before the kill.
	sub, err := b.Subscribe(ctx, broker.TopicEvents, crashSub, broker.SubscribeOptions{AckWait: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	var outMu sync.Mutex
	emit := func(kind string, idx []int) {
		var sb strings.Builder
		sb.WriteString(kind)
		for _, i := range idx {
			fmt.Fprintf(&sb, " %d", i)
		}
		sb.WriteByte('\n')
		outMu.Lock()
		os.Stdout.WriteString(sb.String()) // one write per line, shorter than PIPE_BUF
		outMu.Unlock()
	}

	selfKill := os.Getenv(crashSelfKillEnv) != ""
	var acked atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		payload := strings.Repeat("x", 300)
		for start := 0; start < crashMessages && ctx.Err() == nil; start += crashBatch {
			msgs := make([]*broker.Message, 0, crashBatch)
			idx := make([]int, 0, crashBatch)
			for i := start; i < start+crashBatch; i++ {
				msgs = append(msgs, &broker.Message{
					ID:   strconv.Itoa(i),
					Data: fmt.Appendf(nil, "%05d %s", i, payload),
				})
				idx = append(idx, i)
			}
			if err := b.Publish(ctx, broker.TopicEvents, msgs...); err != nil {
				t.Errorf("Publish: %v", err)
				return
			}
			emit("PUB", idx)
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			msgs, err := sub.Fetch(ctx, crashBatch, 100*time.Millisecond)
			if err != nil {
				return
			}
			var ack []*broker.Message
			var idx []int
			for _, m := range msgs {
				i, _ := strconv.Atoi(string(m.Data[:5]))
				if i%2 == 0 {
					ack = append(ack, m)
					idx = append(idx, i)
				}
			}
			if len(ack) == 0 {
				continue
			}
			emit("ACKING", idx)
			if err := sub.Ack(ctx, ack...); err != nil {
				t.Errorf("Ack: %v", err)
				return
			}
			emit("ACK", idx)
			if selfKill && acked.Add(int64(len(idx))) >= crashSelfKillAcks {
				// The harshest moment: right after an Ack returned.
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	})
	wg.Wait()
}
