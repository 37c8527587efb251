package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/skyjoin/skyjoin/internal/broker/pubsub"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/iam"
	"github.com/skyjoin/skyjoin/internal/platform/secret"
	"github.com/skyjoin/skyjoin/internal/registry/firestore"
	"github.com/skyjoin/skyjoin/internal/store/bigquery"
)

// CloudGrants returns the IAM grants that a process needs on Google Cloud
// to run the stage command args[0] with the flags args[1:] and the
// SKYJOIN_* variables env (as a Cloud Run service sets them): the union of
// what each backend it opens declares for what its stages use of it.
//
//   - every process: the exporter's (--telemetry=gcp) and the registry's
//     (firestore://, where every process verifies API keys);
//   - each stage: its broker needs (stage.broker) on pubsub://, and its
//     store use (stage.store) on bigquery://;
//   - each secret flag given as an sm:// reference: its secret.
//
// The configuration must be valid (the command's own Validate).
func CloudGrants(args []string, env map[string]string) ([]iam.Grant, error) {
	if len(args) == 0 {
		return nil, errors.New("cloud grants: no command")
	}
	i := slices.IndexFunc(stageCommands, func(c command) bool { return c.name == args[0] })
	if i < 0 {
		return nil, fmt.Errorf("cloud grants: %q is not a stage command", args[0])
	}
	cmd := stageCommands[i]
	cfg := newConfig(cmd.name)
	fs, stages, on := stageFlagSet(cmd, cfg, io.Discard)
	if err := fs.Parse(args[1:]); err != nil {
		return nil, fmt.Errorf("cloud grants: %s: %w", cmd.name, err)
	}
	if err := setFromEnv(fs, env); err != nil {
		return nil, fmt.Errorf("cloud grants: %s: %w", cmd.name, err)
	}
	stages = slices.DeleteFunc(stages, func(s *stage) bool { return on[s.name] != nil && !*on[s.name] })
	if err := validateStages(cfg, stages); err != nil {
		return nil, fmt.Errorf("cloud grants: %s: %w", cmd.name, err)
	}

	gs := [][]iam.Grant{cfg.Telemetry.Grants()}
	if strings.HasPrefix(cfg.Registry, "firestore://") {
		gs = append(gs, firestore.Grants)
	}
	var ps *pubsub.Config
	if strings.HasPrefix(cfg.Broker, "pubsub://") {
		c, err := pubsub.ParseURL(cfg.Broker)
		if err != nil {
			return nil, fmt.Errorf("cloud grants: %w", err)
		}
		ps = &c
	}
	onBigQuery := strings.HasPrefix(cfg.Store, "bigquery://")
	for _, s := range stages {
		if s.broker != nil && ps != nil {
			if ps.Create {
				// It creates what is missing: topics and subscriptions.
				gs = append(gs, []iam.Grant{{Role: "roles/pubsub.editor", On: iam.Project}})
			} else {
				gs = append(gs, s.broker().Grants())
			}
		}
		if onBigQuery {
			if s.store&storeWrites != 0 {
				gs = append(gs, bigquery.WriterGrants)
			}
			if s.store&storeReads != 0 {
				gs = append(gs, bigquery.ReaderGrants)
			}
			if s.store&storeErases != 0 {
				gs = append(gs, bigquery.EraserGrants)
			}
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := f.Value.(*secret.Value); ok {
			gs = append(gs, v.Ref().Grants())
		}
	})
	return iam.Union(gs...), nil
}

// setFromEnv sets each flag of fs not given on the command line from its
// SKYJOIN_* variable in env, as platform.ParseFlags does from the
// process's environment.
func setFromEnv(fs *flag.FlagSet, env map[string]string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := env[platform.EnvName(f.Name)]
		if !ok || given[f.Name] {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", platform.EnvName(f.Name), v, err))
		}
	})
	return errors.Join(errs...)
}
