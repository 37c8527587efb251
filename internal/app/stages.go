package app

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/broker/pubsub"
	"github.com/skyjoin/skyjoin/internal/collect"
	"github.com/skyjoin/skyjoin/internal/dashboard"
	"github.com/skyjoin/skyjoin/internal/deadletter"
	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/envelope"
	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/live"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/retry"
	"github.com/skyjoin/skyjoin/internal/segment"
	"github.com/skyjoin/skyjoin/internal/serve"
	"github.com/skyjoin/skyjoin/internal/webhook"
)

// stages returns every stage over c, by name, built once.
func (c *config) stages() map[string]*stage {
	if c.all != nil {
		return c.all
	}
	pt := c.sharedParts()
	c.all = map[string]*stage{
		stIngest: {
			name:     stIngest,
			uses:     []*part{pt[ptBroker], pt[ptEvents]},
			flags:    c.Ingest.RegisterFlags,
			validate: func() error { return c.Ingest.Validate() },
			start:    c.startIngest,
			broker:   ingestNeeds,
		},
		stCollect: {
			name: stCollect,
			uses: []*part{pt[ptBroker], pt[ptDemo]},
			flags: func(fs *flag.FlagSet) {
				c.Collect.RegisterFlags(fs)
				fs.BoolVar(&c.DemoCollect, "collect", true, "with --demo, collect users from the simulator (false: no users are collected)")
			},
			validate: func() error {
				if c.Collect.URL == "" {
					return nil
				}
				return c.Collect.Validate()
			},
			start:  c.startCollect,
			broker: publishEvents,
		},
		stEnrich: {
			name: stEnrich,
			uses: []*part{pt[ptBroker], pt[ptStore], pt[ptWeather], pt[ptDemo], pt[ptPII], pt[ptEvents]},
			flags: func(fs *flag.FlagSet) {
				c.Enrich.RegisterFlags(fs)
				fs.BoolVar(&c.EnrichPull, "enrich-pull", true, "pull the events subscription (false: take events only as Pub/Sub push requests on POST /v1/push/events, which is always served; on Cloud Run pull needs instance-based billing and min instances)")
				fs.DurationVar(&c.StatsEvery, "stats-every", 10*time.Second, "how often to log pipeline counters (0: never)")
				c.retentionFlags(fs)
			},
			validate: func() error { return errors.Join(c.Enrich.Validate(), c.validateRetention()) },
			start:    c.startEnrich,
			broker:   c.enrichNeeds,
			store:    storeWrites,
		},
		stServe: {
			name:     stServe,
			uses:     []*part{pt[ptBroker], pt[ptStore], pt[ptRegistry], pt[ptPII]},
			flags:    c.Serve.RegisterFlags,
			validate: func() error { return c.Serve.Validate() },
			start:    c.startServe,
			broker:   serveNeeds,
			store:    storeReads | storeErases,
		},
		stDeliver: {
			name: stDeliver,
			uses: []*part{pt[ptBroker], pt[ptRegistry]},
			flags: func(fs *flag.FlagSet) {
				c.Webhook.RegisterFlags(fs)
				fs.DurationVar(&c.DeliverAck, "deliver-ack-wait", 0, "how long a records message handed to the webhooks stays unacked before the broker gives it to another deliver instance (0: the longest a batch's retries can take, at most 10m)")
			},
			validate: func() error {
				err := errors.Join(c.Webhook.Validate(), c.validateWebhookKey())
				if c.DeliverAck != 0 && c.DeliverAck < time.Second {
					err = errors.Join(err, fmt.Errorf("deliver-ack-wait must be 0 or at least 1s, got %s", c.DeliverAck))
				}
				return err
			},
			start:  c.startDeliver,
			broker: deliverNeeds,
		},
	}
	return c.all
}

// eventsSubscription is the enrich worker's subscription, which ingest's
// admission control reads the backlog of.
func (c *config) eventsSubscription() string { return cmp.Or(c.Enrich.Subscription, "enrich") }

func (c *config) startIngest(ctx context.Context, p *process, r platform.Router) (*running, error) {
	b, err := p.requireBroker(ingestNeeds())
	if err != nil {
		return nil, err
	}
	ic := c.Ingest
	ic.RequireLocation = c.RequireLocation
	ing := ingest.New(ic, b, p.log)
	var gate *ingest.BacklogGate
	if bl, ok := b.(broker.Backlogger); ok {
		sub := c.eventsSubscription()
		gate = ingest.NewBacklogGate(func(ctx context.Context) (int64, error) {
			return bl.Backlog(ctx, broker.TopicEvents, sub)
		}, c.Ingest.MaxBacklog, 250*time.Millisecond, p.log)
		if bb, ok := b.(broker.ByteBacklogger); ok {
			gate.LimitBytes(func(ctx context.Context) (int64, error) {
				return bb.BacklogBytes(ctx, broker.TopicEvents)
			}, c.Ingest.MaxBacklogBytes)
		}
		ing.Admit = gate.Admit
	}
	ing.Register(r)
	segment.New(segment.Config{MaxEvents: c.Ingest.MaxEvents, MaxBodyBytes: c.Ingest.MaxBodyBytes, PublishTimeout: c.Ingest.PublishTimeout},
		ing, b, p.log).Register(r)
	db, ok := b.(deadletter.Broker)
	if !ok {
		return nil, fmt.Errorf("broker %s cannot list dead letters", c.Broker)
	}
	deadletter.NewHandler(db, p.log).Register(r)
	p.ing, p.gate = ing, gate
	run := &running{}
	if gate != nil {
		run.run = func(ctx, _ context.Context) error {
			gate.Run(ctx)
			return nil
		}
	}
	return run, nil
}

func (c *config) startCollect(ctx context.Context, p *process, r platform.Router) (*running, error) {
	url := c.Collect.URL
	if url == "" && c.Demo && c.DemoCollect {
		s, err := p.sim()
		if err != nil {
			return nil, err
		}
		url = s.RandomUserURL
	}
	if url == "" {
		p.log.Info("collect: no users API (--collect-url); collecting nothing")
		return &running{}, nil
	}
	cc := c.Collect
	cc.URL = url
	if err := cc.Validate(); err != nil {
		return nil, err
	}
	b, err := p.requireBroker(publishEvents())
	if err != nil {
		return nil, err
	}
	col, err := collect.New(cc, &eventPublisher{pub: b, source: "collect"}, collect.Options{Logger: p.log})
	if err != nil {
		return nil, err
	}
	p.collectURL = url
	return &running{run: func(ctx, _ context.Context) error {
		if err := col.Run(ctx); err != nil && ctx.Err() == nil {
			return err
		}
		return nil
	}}, nil
}

// publishEvents is what collect uses of the broker: it publishes events.
func publishEvents() pubsub.Needs { return pubsub.Needs{Publish: []string{broker.TopicEvents}} }

// ingestNeeds is what ingest uses of the broker: it publishes events, and
// its dead-letter routes browse, replay (publish to events) and delete
// dead letters.
func ingestNeeds() pubsub.Needs {
	return pubsub.Needs{Publish: []string{broker.TopicEvents}, DeadLetters: true}
}

// serveNeeds is what the read API uses of the broker: an ephemeral
// subscription of the records (the live stream), and the dead letters
// (erasure deletes a user's).
func serveNeeds() pubsub.Needs {
	return pubsub.Needs{Ephemeral: []string{broker.TopicRecords}, DeadLetters: true}
}

// deliverNeeds is what webhook delivery uses of the broker: the records
// subscription every deliver instance shares.
func deliverNeeds() pubsub.Needs {
	return pubsub.Needs{Subscribe: []pubsub.Sub{{Topic: broker.TopicRecords, Name: deliverSubscription}}}
}

// enrichNeeds is what the worker uses of the broker: it publishes records
// and dead letters and, unless push only, pulls the events subscription.
func (c *config) enrichNeeds() pubsub.Needs {
	n := pubsub.Needs{Publish: []string{broker.TopicRecords, broker.TopicDeadLetter}}
	if c.EnrichPull {
		n.Subscribe = []pubsub.Sub{{Topic: broker.TopicEvents, Name: c.eventsSubscription()}}
	}
	return n
}

func (c *config) startEnrich(ctx context.Context, p *process, r platform.Router) (*running, error) {
	b, err := p.requireBroker(c.enrichNeeds())
	if err != nil {
		return nil, err
	}
	st, err := p.store()
	if err != nil {
		return nil, err
	}
	ws, err := p.weather()
	if err != nil {
		return nil, err
	}
	var sub broker.Subscription
	if c.EnrichPull {
		warnPullOnCloudRun(p.log, stEnrich, "the events subscription",
			"push (--enrich-pull=false and a push subscription to POST /v1/push/events)")
		sub, err = b.Subscribe(ctx, broker.TopicEvents, c.Enrich.Subscription, broker.SubscribeOptions{
			AckWait:        c.Enrich.AckWait,
			MaxOutstanding: c.Enrich.MaxMessages * 4,
		})
		if err != nil {
			return nil, fmt.Errorf("subscribe to %s: %w", broker.TopicEvents, err)
		}
	}
	closeSub := func() error {
		if sub == nil {
			return nil
		}
		return sub.Close()
	}
	policy, err := p.pii()
	if err != nil {
		closeSub()
		return nil, err
	}
	ec := c.Enrich
	ec.RequireLocation = c.RequireLocation
	w := enrich.New(ec, sub, b, ws, st, p.log)
	w.PII = policy
	if c.Demo && printsBanner() {
		// Now and then a stored record on the terminal.
		w.OnStored = sampler(p.stdout, 3*time.Second)
	}
	p.worker = w
	// Pub/Sub push: the same worker, one message a request. Built on the
	// first request, once the process has set the worker's Observer.
	pushHandler := sync.OnceValue(w.PushHandler)
	r.Handle("POST /v1/push/events", http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		pushHandler().ServeHTTP(rw, req)
	}))
	return &running{
		run: func(ctx, hard context.Context) error {
			if c.StatsEvery > 0 {
				go logStats(ctx, p.log, c.StatsEvery, w, ws)
			}
			go runRetention(ctx, st, c.Retention, c.RetentionEvery, p.log)
			if sub == nil {
				<-ctx.Done() // push only: requests are the work
				return nil
			}
			return w.Run(ctx, hard)
		},
		stop: func(context.Context) error { return closeSub() },
	}, nil
}

// warnPullOnCloudRun warns, on Cloud Run, that stage pulls what in the
// background, which needs instance-based billing and min instances (or
// orElse, if the stage can do without the pull): with request-based
// billing Cloud Run throttles the CPU between requests and the pull
// stalls (docs/gcp.md, "How each background stage runs").
func warnPullOnCloudRun(log *slog.Logger, stage, what, orElse string) {
	if !auth.OnCloudRun() {
		return
	}
	msg := stage + ": pulling " + what + " on Cloud Run: give the service instance-based billing (--no-cpu-throttling) and min instances"
	if orElse != "" {
		msg += ", or " + orElse
	}
	log.Warn(msg+"; with request-based billing the CPU is throttled between requests and the pull stalls", "stage", stage)
}

func (c *config) startServe(ctx context.Context, p *process, r platform.Router) (*running, error) {
	st, err := p.store()
	if err != nil {
		return nil, err
	}
	b, err := p.requireBroker(serveNeeds())
	if err != nil {
		return nil, err
	}
	if err := p.mountErasure(r); err != nil {
		return nil, err
	}
	// The live stream and the dashboard of this instance are fed by its own
	// subscription to the records topic: every instance sees every record.
	hub := live.NewHub(0)
	feed := &recordsFeed{b: b, hub: hub, log: p.log}
	warnPullOnCloudRun(p.log, stServe, "the records topic (the live stream and the dashboard's feed)", "")
	if err := feed.subscribe(ctx); err != nil {
		return nil, err
	}
	opts := c.Serve
	opts.Logger = p.log
	opts.Hub = hub
	srv := serve.New(st, opts)
	srv.RegisterReads(r)
	dashboard.Register(r)
	(&auth.Handler{Registry: p.optionalRegistry, Auth: p.authn}).RegisterSession(r)
	p.onDraining(func() { srv.SetDraining(true) })
	return &running{
		run: func(ctx, _ context.Context) error { return feed.run(ctx) },
		stop: func(context.Context) error {
			hub.Close()
			return feed.sub.Close()
		},
	}, nil
}

// recordsFeed hands the records of the records topic to a live hub.
type recordsFeed struct {
	b   broker.Broker
	hub *live.Hub
	log *slog.Logger
	sub broker.Subscription
}

func (f *recordsFeed) subscribe(ctx context.Context) error {
	sub, err := f.b.Subscribe(ctx, broker.TopicRecords, "serve", broker.SubscribeOptions{Ephemeral: true, MaxOutstanding: 1000})
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", broker.TopicRecords, err)
	}
	f.sub = sub
	return nil
}

// run reads the records topic until ctx is done. Should the broker drop
// this instance's subscription (it was idle past the broker's limit), the
// records published meanwhile are missed: the streams are ended with that
// reason, their clients resume from the store with Last-Event-ID, and the
// feed subscribes again.
func (f *recordsFeed) run(ctx context.Context) error {
	return consumeRecords(ctx, func() broker.Subscription { return f.sub }, f.log, "serve",
		func(err error) error {
			if !errors.Is(err, broker.ErrSubscriptionGone) {
				return err
			}
			f.log.Warn("serve: the records subscription was removed by the broker; live streams resume from the store", "error", err.Error())
			f.hub.DropAll("the server lost its feed of records: resume with Last-Event-ID")
			f.sub.Close()
			return f.subscribe(ctx)
		},
		func(msgs []*broker.Message) {
			for _, m := range msgs {
				if f.hub.Len() == 0 {
					continue // no stream to feed: not worth decoding
				}
				recs, err := envelope.DecodeRecords(m)
				if err != nil {
					f.log.Error("serve: a records message does not decode; skipped", "message_id", m.ID, "error", err.Error())
					continue
				}
				f.hub.Publish(recs)
			}
			if len(msgs) > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := f.sub.Ack(ctx, msgs...); err != nil {
					f.log.Warn("serve: ack records", "error", err.Error())
				}
			}
		})
}

// consumeRecords fetches batches of records messages from sub() and hands
// them to handle until ctx is done. A fetch error goes to onErr first
// (nil: carry on at once); what it returns is retried with backoff, but a
// closed subscription ends the loop.
func consumeRecords(ctx context.Context, sub func() broker.Subscription, log *slog.Logger, stage string,
	onErr func(error) error, handle func([]*broker.Message)) error {
	backoff := retry.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ctx.Err() == nil; {
		msgs, err := sub().Fetch(ctx, 256, time.Second)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && onErr != nil {
			err = onErr(err)
		}
		if err != nil {
			if errors.Is(err, broker.ErrClosed) {
				return fmt.Errorf("fetch records: %w", err)
			}
			log.Warn(stage+": fetch records; retrying", "error", err.Error())
			retry.Sleep(ctx, backoff.Delay(attempt))
			attempt++
			continue
		}
		attempt = 1
		handle(msgs)
	}
	return nil
}

// deliverSubscription is the durable subscription every deliver instance
// shares on the records topic: each records message goes to one of them.
const deliverSubscription = "deliver"

func (c *config) startDeliver(ctx context.Context, p *process, r platform.Router) (*running, error) {
	b, err := p.requireBroker(deliverNeeds())
	if err != nil {
		return nil, err
	}
	reg, err := p.registry()
	if err != nil {
		return nil, err
	}
	wcfg, err := c.webhookConfig(ctx, p)
	if err != nil {
		return nil, err
	}
	hooks, err := webhook.New(ctx, reg, wcfg, p.log)
	if err != nil {
		return nil, err
	}
	// Each message's records are offered to the webhooks; the message is
	// acked once every one of them was delivered or kept in the failure
	// list (at least once: a crash before that brings the message back).
	// A message stays unacked for at most the whole of a batch's retries.
	ackWait := c.DeliverAck
	if ackWait <= 0 {
		n := time.Duration(c.Webhook.MaxAttempts)
		ackWait = min(c.Webhook.RequestTimeout*n+c.Webhook.MaxRetryDelay*n+time.Minute, 10*time.Minute)
	}
	warnPullOnCloudRun(p.log, stDeliver, "the records subscription (webhook delivery, which also retries between requests)", "")
	sub, err := b.Subscribe(ctx, broker.TopicRecords, deliverSubscription, broker.SubscribeOptions{
		AckWait: ackWait, MaxOutstanding: c.Webhook.QueueSize * 4,
	})
	if err != nil {
		hooks.Close(ctx)
		return nil, fmt.Errorf("subscribe to %s: %w", broker.TopicRecords, err)
	}
	hooks.Register(r)
	d := &deliverLoop{sub: sub, hooks: hooks, log: p.log}
	return &running{
		run: d.run,
		stop: func(ctx context.Context) error {
			// Stop taking records, deliver what is queued within the
			// deadline, store the rest as failures (their messages are
			// acked as that happens), then let go of the subscription.
			err := hooks.Close(ctx)
			d.wait(ctx)
			return errors.Join(err, sub.Close())
		},
	}, nil
}

// deliverLoop feeds the records topic to the webhooks.
type deliverLoop struct {
	sub      broker.Subscription
	hooks    *webhook.Dispatcher
	log      *slog.Logger
	inFlight sync.WaitGroup // messages handed over and not yet acked
}

func (d *deliverLoop) run(ctx, _ context.Context) error {
	return consumeRecords(ctx, func() broker.Subscription { return d.sub }, d.log, "deliver", nil, func(msgs []*broker.Message) {
		for _, m := range msgs {
			if d.hooks.Active() == 0 {
				d.ack(m) // no webhook: nothing to deliver
				continue
			}
			recs, err := envelope.DecodeRecords(m)
			if err != nil {
				// Not ours to fix, and nothing would ever decode it: say so
				// and let it go, rather than block the topic.
				d.log.Error("deliver: a records message does not decode; skipped", "message_id", m.ID, "error", err.Error())
				d.ack(m)
				continue
			}
			d.inFlight.Add(1)
			d.hooks.Deliver(recs, func() {
				defer d.inFlight.Done()
				d.ack(m)
			})
		}
	})
}

func (d *deliverLoop) ack(m *broker.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.sub.Ack(ctx, m); err != nil {
		d.log.Warn("deliver: ack records; they will come again", "message_id", m.ID, "error", err.Error())
	}
}

// wait waits until every message handed over was acked, or ctx is done.
func (d *deliverLoop) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { d.inFlight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
