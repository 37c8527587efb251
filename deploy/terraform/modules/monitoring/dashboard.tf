locals {
  # One chart per entry, two a row.
  charts = [
    {
      title   = "Events received by ingest, by outcome (per second)"
      filter  = "${local.prom}/skyjoin.ingest.events/counter\""
      aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = ["metric.label.outcome"]
    },
    {
      title   = "Records stored, by enrichment status (per second)"
      filter  = "${local.prom}/skyjoin.enrich.events/counter\""
      aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = ["metric.label.status"]
    },
    {
      title   = "End-to-end latency p99, from ingest and from occurrence (s)"
      filter  = "${local.prom}/skyjoin.pipeline.latency/histogram\""
      aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_99", group_by = ["metric.label.from"]
    },
    {
      title   = "Store write latency p99 (s)"
      filter  = "${local.prom}/skyjoin.store.write.duration/histogram\""
      aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_99", group_by = ["metric.label.outcome"]
    },
    {
      title   = "Oldest unacked event (s)"
      filter  = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${var.events_subscription}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      aligner = "ALIGN_MAX", reducer = "REDUCE_MAX", group_by = []
    },
    {
      title   = "Unacked messages: events and dead letters"
      filter  = "resource.type = \"pubsub_subscription\" AND (resource.label.subscription_id = \"${var.events_subscription}\" OR resource.label.subscription_id = \"${var.deadletter_subscription}\") AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      aligner = "ALIGN_MAX", reducer = "REDUCE_MAX", group_by = ["resource.label.subscription_id"]
    },
    {
      title   = "Dead-lettered events, by stage (per second)"
      filter  = "${local.prom}/skyjoin.deadletter.events/counter\""
      aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = ["metric.label.stage"]
    },
    {
      title   = "Worker messages, acked and nacked (per second)"
      filter  = "${local.prom}/skyjoin.enrich.messages/counter\""
      aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = ["metric.label.outcome"]
    },
    {
      title   = "Weather provider calls (per second)"
      filter  = "${local.prom}/skyjoin.weather.calls/counter\""
      aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = []
    },
    {
      title   = "Weather provider failed calls (per second)"
      filter  = "${local.prom}/skyjoin.weather.call.errors/counter\""
      aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = []
    },
    {
      title   = "Cloud Run requests, by service and code class (per second)"
      filter  = "resource.type = \"cloud_run_revision\" AND (${local.services}) AND metric.type = \"run.googleapis.com/request_count\""
      aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = ["resource.label.service_name", "metric.label.response_code_class"]
    },
    {
      title   = "Cloud Run instances, by service"
      filter  = "resource.type = \"cloud_run_revision\" AND (${local.services}) AND metric.type = \"run.googleapis.com/container/instance_count\""
      aligner = "ALIGN_MAX", reducer = "REDUCE_SUM", group_by = ["resource.label.service_name"]
    },
  ]
}

resource "google_monitoring_dashboard" "skyjoin" {
  project = var.project
  dashboard_json = jsonencode({
    displayName = "skyjoin ${var.env}"
    mosaicLayout = {
      columns = 48
      tiles = [for i, c in local.charts : {
        xPos   = (i % 2) * 24
        yPos   = floor(i / 2) * 16
        width  = 24
        height = 16
        widget = {
          title = c.title
          xyChart = {
            dataSets = [{
              plotType = "LINE"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = c.filter
                  aggregation = {
                    alignmentPeriod    = "60s"
                    perSeriesAligner   = c.aligner
                    crossSeriesReducer = c.reducer
                    groupByFields      = c.group_by
                  }
                }
              }
            }]
          }
        }
      }]
    }
  })
}
