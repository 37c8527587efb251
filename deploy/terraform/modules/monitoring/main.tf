# Alert policies and a dashboard over Google's own Pub/Sub and Cloud Run
# metrics and skyjoin's OpenTelemetry instruments. skyjoin exports over
# OTLP to the Telemetry API (--telemetry=gcp), which stores each instrument
# under the Prometheus mapping: metric type
# prometheus.googleapis.com/INSTRUMENT_NAME/KIND (KIND counter, gauge or
# histogram), monitored resource prometheus_target. go test
# ./deploy/terraform checks every metric type here against the code.

locals {
  prom     = "resource.type = \"prometheus_target\" AND metric.type = \"prometheus.googleapis.com"
  services = join(" OR ", [for s in var.services : "resource.label.service_name = \"${s}\""])
}

resource "google_monitoring_alert_policy" "backlog_age" {
  project               = var.project
  display_name          = "skyjoin ${var.env}: events wait too long for the worker"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "ERROR"

  documentation {
    content   = "The oldest unacked message of ${var.events_subscription} is older than ${var.backlog_age_seconds}s: the worker is down, too slow (scale it) or failing (see its logs and the dead letters)."
    mime_type = "text/markdown"
  }

  conditions {
    display_name = "oldest unacked message age > ${var.backlog_age_seconds}s"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${var.events_subscription}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.backlog_age_seconds
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project
  display_name          = "skyjoin ${var.env}: dead letters"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "WARNING"

  documentation {
    content   = "Events were dead-lettered. Read why with GET /v1/deadletters (or skyjoin replay --list); fix the sender or the cause and replay them."
    mime_type = "text/markdown"
  }

  # The worker's own dead letters, with their reasons.
  conditions {
    display_name = "events dead-lettered by the worker"
    condition_threshold {
      filter          = "${local.prom}/skyjoin.deadletter.events/counter\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  # What Pub/Sub forwarded itself (past max_delivery_attempts) shows only here.
  conditions {
    display_name = "dead letters waiting in ${var.deadletter_subscription}"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${var.deadletter_subscription}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "600s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "error_ratio" {
  project               = var.project
  display_name          = "skyjoin ${var.env}: 5xx ratio"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "ERROR"

  documentation {
    content   = "More than ${var.error_ratio * 100}% of a service's requests answered 5xx for 5 minutes (503 is a backend outage: the store, the broker or the weather)."
    mime_type = "text/markdown"
  }

  conditions {
    display_name = "5xx / all requests > ${var.error_ratio}"
    condition_threshold {
      filter                  = "resource.type = \"cloud_run_revision\" AND (${local.services}) AND metric.type = \"run.googleapis.com/request_count\" AND metric.label.response_code_class = \"5xx\""
      denominator_filter      = "resource.type = \"cloud_run_revision\" AND (${local.services}) AND metric.type = \"run.googleapis.com/request_count\""
      comparison              = "COMPARISON_GT"
      threshold_value         = var.error_ratio
      duration                = "300s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
      denominator_aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }
}

resource "google_monitoring_alert_policy" "latency" {
  project               = var.project
  display_name          = "skyjoin ${var.env}: end-to-end latency"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "WARNING"

  documentation {
    content   = "The p99 time from ingest to stored (skyjoin.pipeline.latency, from=ingested_at) is above ${var.latency_p99_seconds}s for 10 minutes."
    mime_type = "text/markdown"
  }

  conditions {
    display_name = "p99 ingest-to-stored > ${var.latency_p99_seconds}s"
    condition_threshold {
      filter          = "${local.prom}/skyjoin.pipeline.latency/histogram\" AND metric.label.from = \"ingested_at\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.latency_p99_seconds
      duration        = "600s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_99"
      }
    }
  }
}
