package pubsub

import (
	"context"
	"errors"
	"fmt"

	ps "cloud.google.com/go/pubsub/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skyjoin/skyjoin/internal/broker"
)

// classify wraps err with broker.ErrUnavailable when it means Pub/Sub cannot
// take data now: the service is unavailable, timing out or out of quota.
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
	if errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ps.ErrFlowControllerMaxOutstandingMessages) ||
		errors.Is(err, ps.ErrFlowControllerMaxOutstandingBytes) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}

// alreadyExists reports whether err is the service's AlreadyExists.
func alreadyExists(err error) bool { return status.Code(err) == codes.AlreadyExists }
