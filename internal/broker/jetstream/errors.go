package jetstream

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skyjoin/skyjoin/internal/broker"
)

// JetStream API error codes meaning the server cannot take data now.
const (
	codeInsufficientResources = 10023
	codeMemoryExceeded        = 10028
	codeStorageExceeded       = 10047
	codeStreamStoreFailed     = 10077
)

// classify wraps err with broker.ErrUnavailable when it means the broker
// cannot take data now: timeouts, no responders, storage full, a connection
// that is closed, draining or reconnecting.
func classify(err error) error {
	if err == nil || errors.Is(err, broker.ErrUnavailable) {
		return err
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
	}
	return err
}

func unavailable(err error) bool {
	for _, target := range []error{
		context.DeadlineExceeded,
		nats.ErrTimeout,
		nats.ErrNoResponders,
		nats.ErrConnectionClosed,
		nats.ErrConnectionDraining,
		nats.ErrConnectionReconnecting,
		nats.ErrReconnectBufExceeded,
		nats.ErrDisconnected,
		nats.ErrNoServers,
		nats.ErrSlowConsumer,
		jetstream.ErrAsyncPublishTimeout,
		jetstream.ErrTooManyStalledMsgs,
		jetstream.ErrNoStreamResponse,
		jetstream.ErrServerShutdown,
		jetstream.ErrJetStreamNotEnabled,
		jetstream.ErrJetStreamNotEnabledForAccount,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	var jsErr jetstream.JetStreamError
	if errors.As(err, &jsErr) {
		if api := jsErr.APIError(); api != nil {
			switch api.ErrorCode {
			case codeInsufficientResources, codeMemoryExceeded, codeStorageExceeded, codeStreamStoreFailed:
				return true
			}
			return api.Code == 503
		}
	}
	return false
}
