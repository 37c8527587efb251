package pipeline

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/pubsubio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"

	// The Dataflow runner and Prism, for --runner.
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"

	"github.com/skyjoin/skyjoin/internal/envelope"
)

// Run builds the streaming job from Pub/Sub to BigQuery and runs it with
// the runner of Beam's flags (on Dataflow: submits it). Dataflow's id
// attribute is the envelope's message_id, so that Dataflow drops a message
// Pub/Sub delivered twice; events repeated in different messages are left
// to the view's dedup by event_id.
func Run(ctx context.Context, cfg Config) error {
	if cfg.MaxWorkers == 0 {
		// Dataflow's --max_num_workers, when the runner registered it.
		if f := flag.Lookup("max_num_workers"); f != nil {
			cfg.MaxWorkers, _ = strconv.Atoi(f.Value.String())
		}
	}
	if err := cfg.Validate(false); err != nil {
		return err
	}
	p, s := beam.NewPipelineWithRoot()
	subProject, sub := split(cfg.Subscription, "subscriptions")
	msgs := pubsubio.Read(s, subProject, pubsubio.ReadOptions{
		Subscription: sub, IDAttribute: envelope.AttrMessageID, WithAttributes: true,
	})
	dead, records := Build(s, msgs, cfg)
	dlProject, dlTopic := split(cfg.DeadLetterTopic, "topics")
	pubsubio.Write(s, dlProject, dlTopic, dead)
	if cfg.RecordsTopic != "" {
		rProject, rTopic := split(cfg.RecordsTopic, "topics")
		pubsubio.Write(s, rProject, rTopic, records)
	}
	if err := beamx.Run(ctx, p); err != nil {
		return fmt.Errorf("skyjoin-dataflow: %w", err)
	}
	return nil
}

// split reads projects/P/KIND/NAME (checked by Validate).
func split(path, kind string) (project, name string) {
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[2] != kind {
		return "", ""
	}
	return parts[1], parts[3]
}
