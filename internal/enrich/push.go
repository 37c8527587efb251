package enrich

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/platform"
)

// Pub/Sub push: instead of pulling, the worker is sent each message of a
// push subscription as an HTTP request, and its answer settles it: 2xx acks,
// anything else nacks (Pub/Sub delivers it again with its retry policy).
// A push request goes through the same code as a pulled batch (handle),
// with a one-message batch and a Subscription whose Ack and Nack record the
// outcome for the answer:
//
//   - 204 once the records are stored and published to the records topic
//     and the dead letters published (or the message dead-lettered as a
//     whole): what an ack means everywhere in skyjoin;
//   - 503 when it must come again (store, broker or weather out; a poison
//     message before its last attempt), with Retry-After the worker's own
//     delay (Pub/Sub ignores it and uses the subscription's retry policy);
//   - 400 for a request that is not a push message.
//
// A poison message is one that fails while others succeed. With one message
// per request, "others" are the messages this process stored in the last
// pushPoisonWindow: past --enrich-max-attempts deliveries (Pub/Sub's
// deliveryAttempt, sent only when the subscription has a dead-letter
// policy), such a message is dead-lettered with its reason and answered
// 204. When nothing was stored lately it is an outage and nothing is
// dead-lettered.
const pushPoisonWindow = 10 * time.Second

// maxPushBody bounds a push request: Pub/Sub's largest message (10 MB) in
// base64, and its envelope.
const maxPushBody = 14 << 20

// pushRequest is the body of a Pub/Sub push request (the "wrapped" payload).
type pushRequest struct {
	Message struct {
		Data        []byte            `json:"data"` // base64
		Attributes  map[string]string `json:"attributes"`
		MessageID   string            `json:"messageId"`
		PublishTime time.Time         `json:"publishTime"`
	} `json:"message"`
	Subscription string `json:"subscription"`
	// DeliveryAttempt is set when the subscription has a dead-letter
	// policy; absent, every delivery counts as the first.
	DeliveryAttempt int `json:"deliveryAttempt"`
}

// PushHandler answers Pub/Sub push requests with the worker's code.
type PushHandler struct {
	w   *Worker
	sub *pushSubscription
}

// PushHandler returns an http.Handler for Pub/Sub push requests. It shares
// the worker's configuration, store, broker, counters, Observer and PII
// policy as they are when it is called; call it after setting them.
func (w *Worker) PushHandler() *PushHandler {
	pw := *w
	sub := &pushSubscription{}
	pw.sub, pw.push = sub, true
	return &PushHandler{w: &pw, sub: sub}
}

// othersSucceed reports whether, in push mode, the worker stored a batch
// lately: a message failing now is poison, not an outage.
func (w *Worker) othersSucceed() bool {
	if !w.push {
		return false
	}
	last := w.stats.lastOK.Load()
	return last != 0 && w.now().Sub(time.Unix(0, last)) < pushPoisonWindow
}

func (h *PushHandler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	// ReadBody: 413 past maxPushBody, 408 for a body that has not arrived
	// within the server's read timeout, and a message that never carries
	// the read error's text (socket addresses).
	body, berr := platform.ReadBody(rw, r, maxPushBody, false)
	if berr != nil {
		pushError(rw, berr.Status, "push request: "+berr.Message, 0)
		return
	}
	var req pushRequest
	if err := json.Unmarshal(body, &req); err != nil {
		pushError(rw, http.StatusBadRequest, fmt.Sprintf("push request: not a Pub/Sub push message: %v", err), 0)
		return
	}
	if req.Message.MessageID == "" {
		pushError(rw, http.StatusBadRequest, "push request: message.messageId is missing", 0)
		return
	}
	d := &pushDelivery{}
	m := &broker.Message{ID: req.Message.MessageID, Data: req.Message.Data, Attributes: req.Message.Attributes,
		Deliveries: max(req.DeliveryAttempt, 1), PublishedAt: req.Message.PublishTime, Handle: d}
	ctx, cancel := context.WithTimeout(broker.ContextWithTrace(r.Context(), m.Attributes), h.w.cfg.AckWait)
	defer cancel()
	h.w.handle(ctx, []*broker.Message{m})
	acked, delay := d.outcome()
	if acked {
		rw.WriteHeader(http.StatusNoContent)
		return
	}
	pushError(rw, http.StatusServiceUnavailable, "the message was not processed; it must be delivered again", delay)
}

// pushError answers an error with the API's error body
// (platform.WriteError), as every route does.
func pushError(rw http.ResponseWriter, status int, msg string, retry time.Duration) {
	if retry > 0 {
		rw.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
	}
	if status == http.StatusRequestTimeout {
		rw.Header().Set("Connection", "close") // the rest of the body may still come
	}
	platform.WriteError(rw, status, msg, nil)
}

// pushDelivery is the outcome of one pushed message (its Handle).
type pushDelivery struct {
	mu    sync.Mutex
	acked bool
	delay time.Duration // of a nack
}

func (d *pushDelivery) outcome() (bool, time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acked, d.delay
}

// pushSubscription is the broker.Subscription of push: Ack and Nack record
// the outcome in each message's pushDelivery; the HTTP answer settles it.
type pushSubscription struct{}

var _ broker.Subscription = (*pushSubscription)(nil)

// errPushFetch: a push subscription is sent its messages.
var errPushFetch = errors.New("enrich: a push subscription cannot fetch")

func (*pushSubscription) Fetch(context.Context, int, time.Duration) ([]*broker.Message, error) {
	return nil, errPushFetch
}

func (*pushSubscription) Ack(_ context.Context, msgs ...*broker.Message) error {
	for _, m := range msgs {
		if d, ok := m.Handle.(*pushDelivery); ok {
			d.mu.Lock()
			d.acked = true
			d.mu.Unlock()
		}
	}
	return nil
}

func (*pushSubscription) Nack(_ context.Context, delay time.Duration, msgs ...*broker.Message) error {
	for _, m := range msgs {
		if d, ok := m.Handle.(*pushDelivery); ok {
			d.mu.Lock()
			d.acked, d.delay = false, delay
			d.mu.Unlock()
		}
	}
	return nil
}

func (*pushSubscription) Close() error { return nil }
