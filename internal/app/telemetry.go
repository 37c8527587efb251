package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/secret"
	"github.com/skyjoin/skyjoin/internal/platform/telemetry"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// setupTelemetry starts metrics and traces as cfg says. shutdown flushes.
//
// The providers are given to skyjoin's own stages, and deliberately not
// made OpenTelemetry's globals: the Google Cloud clients (pubsub/v2,
// bigquery, managedwriter, firestore, through their gRPC and HTTP
// transports) record their spans and per-RPC metrics on the global
// providers, which stay no-ops, so that their instrumentation costs
// nothing and floods neither Cloud Trace nor Cloud Monitoring (nor
// /metrics). The propagator is global: trace context still flows.
func setupTelemetry(ctx context.Context, cfg telemetry.Config, log *slog.Logger) (_ *telemetry.Provider, shutdown func(context.Context) error, _ error) {
	p, err := telemetry.New(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	otel.SetTextMapPropagator(telemetry.Propagator)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("telemetry: export failed", "error", err.Error())
	}))
	log.Info("telemetry", "exporter", p.Exporter(), "project", p.Project(), "trace_sample_ratio", cfg.SampleRatio)
	return p, p.Shutdown, nil
}

// closeTelemetry is shutdown (the last flush) as a closeStack function,
// within the shutdown's deadline and at most telemetryFlushTimeout.
func closeTelemetry(shutdown func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, telemetryFlushTimeout)
		defer cancel()
		return shutdown(ctx)
	}
}

// telemetryFlushTimeout bounds the last flush of metrics and traces.
const telemetryFlushTimeout = 10 * time.Second

// instrumentPipeline mounts GET /metrics (with the prometheus exporter),
// attaches the telemetry observers to ingest and the worker, and reports
// the weather service's counters, the broker backlog and the store's
// memory as observable instruments. Any of ing, w, weatherStats, gate and
// storeMem may be nil; storeMem returns nil until the process has opened a
// store that reports its memory.
func instrumentPipeline(p *telemetry.Provider, mux platform.Router, ing *ingest.Handler, w *enrich.Worker,
	weatherStats func() weather.Stats, gate *ingest.BacklogGate, subscription string, storeMem func() memoryReporter) error {
	if h := p.MetricsHandler(); h != nil && mux != nil {
		mux.Handle("GET /metrics", h)
	}
	if ing != nil {
		o, err := ingest.NewTelemetry(p.MeterProvider(), p.TracerProvider())
		if err != nil {
			return err
		}
		ing.Observer = o
	}
	if w != nil {
		o, err := enrich.NewTelemetry(p.MeterProvider(), p.TracerProvider())
		if err != nil {
			return err
		}
		w.Observer = o
	}
	var backlog, refused func() int64
	if gate != nil {
		backlog, refused = gate.Backlog, gate.Refused
	}
	return registerPipelineGauges(p.MeterProvider(), weatherStats, backlog, refused, subscription, storeMem)
}

const appScope = "github.com/skyjoin/skyjoin/internal/app"

// registerPipelineGauges registers observable instruments read at each
// collection: the weather service's Stats and the broker backlog as the
// admission gate last read it. nil funcs are skipped.
//
// Metrics:
//
//	skyjoin.weather.requests          counter  {request}   lookups asked of the weather service
//	skyjoin.weather.cache.hits        counter  {request}   answered fresh from the cache
//	skyjoin.weather.cache.misses      counter  {request}   not fresh in the cache
//	skyjoin.weather.stale             counter  {request}   answered with an earlier slot's answer
//	skyjoin.weather.errors            counter  {request}   answered with an error
//	skyjoin.weather.calls             counter  {call}      provider calls, retries included
//	skyjoin.weather.call.errors       counter  {call}      provider calls that failed
//	skyjoin.weather.call.locations    counter  {location}  locations asked over all calls
//	skyjoin.weather.call.time         counter  s           provider call latency, summed
//	skyjoin.weather.quota.waits       counter  {call}      calls that waited for the quota
//	skyjoin.weather.quota.wait.time   counter  s           time waited for the quota
//	skyjoin.weather.quota.exhausted   counter  {call}      calls refused: the quota would not allow them soon enough
//	skyjoin.weather.breaker.rejects   counter  {call}      calls not made: circuit open
//	skyjoin.weather.breaker.open      gauge    1           1 while the circuit is open or half-open
//	skyjoin.weather.cache.entries     gauge    {entry}     cache entries
//	skyjoin.weather.cache.size        gauge    By          approximate cache memory
//	skyjoin.broker.backlog            gauge    {message}   messages waiting for the worker (topic, subscription)
//	skyjoin.ingest.admission.refused  counter  {request}   requests refused by admission control
//	skyjoin.store.memory              gauge    By          the embedded store's memory outside Go's heap (part)
func registerPipelineGauges(mp metric.MeterProvider, weatherStats func() weather.Stats, backlog, refused func() int64, subscription string,
	storeMem func() memoryReporter) error {
	m := mp.Meter(appScope)
	var (
		insts []metric.Observable
		errs  []error
	)
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		insts = append(insts, c)
		return c
	}
	fcounter := func(name, unit, desc string) metric.Float64ObservableCounter {
		c, err := m.Float64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		insts = append(insts, c)
		return c
	}
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		insts = append(insts, g)
		return g
	}
	var cb []func(context.Context, metric.Observer)
	if weatherStats != nil {
		var (
			requests   = counter("skyjoin.weather.requests", "{request}", "Lookups asked of the weather service.")
			hits       = counter("skyjoin.weather.cache.hits", "{request}", "Weather lookups answered fresh from the cache.")
			misses     = counter("skyjoin.weather.cache.misses", "{request}", "Weather lookups not fresh in the cache.")
			stale      = counter("skyjoin.weather.stale", "{request}", "Weather lookups answered with an earlier slot's answer.")
			wErrors    = counter("skyjoin.weather.errors", "{request}", "Weather lookups answered with an error.")
			calls      = counter("skyjoin.weather.calls", "{call}", "Weather provider calls (one HTTP request each), retries included.")
			callErrs   = counter("skyjoin.weather.call.errors", "{call}", "Weather provider calls that failed.")
			points     = counter("skyjoin.weather.call.locations", "{location}", "Locations asked of the weather provider over all calls.")
			callTime   = fcounter("skyjoin.weather.call.time", "s", "Weather provider call latency, summed.")
			quotaWaits = counter("skyjoin.weather.quota.waits", "{call}", "Weather provider calls that waited for the quota.")
			quotaTime  = fcounter("skyjoin.weather.quota.wait.time", "s", "Time weather calls waited for the quota.")
			exhausted  = counter("skyjoin.weather.quota.exhausted", "{call}", "Weather calls refused: the quota would not allow them soon enough.")
			rejects    = counter("skyjoin.weather.breaker.rejects", "{call}", "Weather calls not made because the circuit breaker was open.")
			open       = gauge("skyjoin.weather.breaker.open", "1", "1 while the weather circuit breaker is open or half-open, else 0.")
			entries    = gauge("skyjoin.weather.cache.entries", "{entry}", "Weather cache entries.")
			size       = gauge("skyjoin.weather.cache.size", "By", "Approximate memory of the weather cache.")
		)
		cb = append(cb, func(_ context.Context, o metric.Observer) {
			s := weatherStats()
			o.ObserveInt64(requests, s.Requests)
			o.ObserveInt64(hits, s.Hits)
			o.ObserveInt64(misses, s.Misses)
			o.ObserveInt64(stale, s.Stale)
			o.ObserveInt64(wErrors, s.Errors)
			o.ObserveInt64(calls, s.Calls)
			o.ObserveInt64(callErrs, s.CallErrors)
			o.ObserveInt64(points, s.Points)
			o.ObserveFloat64(callTime, s.LatencySum.Seconds())
			o.ObserveInt64(quotaWaits, s.QuotaWaits)
			o.ObserveFloat64(quotaTime, s.QuotaWaited.Seconds())
			o.ObserveInt64(exhausted, s.QuotaExhausted)
			o.ObserveInt64(rejects, s.BreakerRejects)
			var isOpen int64
			if s.BreakerState != "" && s.BreakerState != "closed" {
				isOpen = 1
			}
			o.ObserveInt64(open, isOpen)
			o.ObserveInt64(entries, int64(s.Entries))
			o.ObserveInt64(size, s.Bytes)
		})
	}
	if backlog != nil {
		g := gauge("skyjoin.broker.backlog", "{message}", "Broker messages waiting for the worker, as admission control last read it.")
		opt := metric.WithAttributeSet(attribute.NewSet(
			attribute.String("topic", broker.TopicEvents), attribute.String("subscription", subscription)))
		cb = append(cb, func(_ context.Context, o metric.Observer) { o.ObserveInt64(g, backlog(), opt) })
	}
	if refused != nil {
		c := counter("skyjoin.ingest.admission.refused", "{request}", "Ingest requests refused (503) because the broker backlog was over its limit.")
		cb = append(cb, func(_ context.Context, o metric.Observer) { o.ObserveInt64(c, refused()) })
	}
	if storeMem != nil {
		g := gauge("skyjoin.store.memory", "By", "Memory of the embedded store outside Go's heap, by part: buffer_manager (DuckDB's, up to its memory limit), allocator_allocated and allocator_resident (DuckDB's allocator: in use, and resident with the freed pages it keeps), id_index (the event id index's mapped arrays), row_store (the row store's block cache and memtables, in the C heap).")
		part := func(name string) metric.ObserveOption {
			return metric.WithAttributeSet(attribute.NewSet(attribute.String("part", name)))
		}
		bufferManager, allocated, resident, idIndex, rows := part("buffer_manager"), part("allocator_allocated"), part("allocator_resident"), part("id_index"), part("row_store")
		cb = append(cb, func(ctx context.Context, o metric.Observer) {
			st := storeMem()
			if st == nil {
				return
			}
			m, err := st.Memory(ctx)
			if err != nil {
				return // the store is closing, or failed: its health says so
			}
			o.ObserveInt64(g, m.Bytes, bufferManager)
			o.ObserveInt64(g, m.IDIndexBytes, idIndex)
			o.ObserveInt64(g, m.RowStoreBytes, rows)
			if a := m.Allocator; a != nil {
				o.ObserveInt64(g, a.Allocated, allocated)
				o.ObserveInt64(g, a.Resident, resident)
			}
		})
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("telemetry: create pipeline metric: %w", err)
		}
	}
	if len(insts) == 0 {
		return nil
	}
	if _, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		for _, f := range cb {
			f(ctx, o)
		}
		return nil
	}, insts...); err != nil {
		return fmt.Errorf("telemetry: register pipeline metrics: %w", err)
	}
	return nil
}

// resolveSecrets resolves secret references (sm://, env://) given to flags,
// with one resolver; a Value shares its state with its copies, so the
// config holding them sees the secrets.
func resolveSecrets(ctx context.Context, vals ...secret.Value) error {
	r := &secret.Resolver{}
	defer r.Close()
	for _, v := range vals {
		if err := v.Resolve(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// Instruments registers on mp every metric instrument a skyjoin process
// may export, as the stages do: ingest's, the worker's and the pipeline's
// observable ones. go test ./deploy/terraform reads their names to check
// that the alert policies and the dashboard use only metrics that exist.
func Instruments(mp metric.MeterProvider) error {
	tp := tracenoop.NewTracerProvider()
	if _, err := ingest.NewTelemetry(mp, tp); err != nil {
		return err
	}
	if _, err := enrich.NewTelemetry(mp, tp); err != nil {
		return err
	}
	zero := func() int64 { return 0 }
	return registerPipelineGauges(mp, func() weather.Stats { return weather.Stats{} }, zero, zero, "enrich", func() memoryReporter { return nil })
}
