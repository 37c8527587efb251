# The dataset, table and view that `skyjoin migrate` makes, from the same
# generated files: the schema (internal/event) and the partitioning,
# clustering and view query (internal/store/bigquery; both checked by
# go test against the code).

locals {
  files  = "${path.module}/../../../bigquery"
  layout = jsondecode(file("${local.files}/events.layout.json"))
  labels = merge(var.labels, { app = "skyjoin" })
}

resource "google_bigquery_dataset" "this" {
  project                    = var.project
  dataset_id                 = var.dataset
  location                   = var.location
  description                = "skyjoin enriched events"
  max_time_travel_hours      = var.max_time_travel_hours
  delete_contents_on_destroy = false
  labels                     = local.labels
}

resource "google_bigquery_table" "events" {
  project             = var.project
  dataset_id          = google_bigquery_dataset.this.dataset_id
  table_id            = var.table
  description         = "skyjoin enriched events, one row per stored copy (the Storage Write API's default stream is at-least-once); query the view ${var.table}${local.layout.view_suffix} for one row per event."
  deletion_protection = var.deletion_protection
  labels              = local.labels

  schema = file("${local.files}/events.schema.json")

  time_partitioning {
    type          = local.layout.partitioning.type
    field         = local.layout.partitioning.field
    expiration_ms = var.retention_days > 0 ? var.retention_days * 86400000 : null
  }

  clustering = local.layout.clustering
}

resource "google_bigquery_table" "latest" {
  project             = var.project
  dataset_id          = google_bigquery_dataset.this.dataset_id
  table_id            = "${var.table}${local.layout.view_suffix}"
  description         = "One row per event_id: the copy processed last."
  deletion_protection = false
  labels              = local.labels

  view {
    query = templatefile("${local.files}/events_latest.sql.tftpl", {
      project = var.project
      dataset = google_bigquery_dataset.this.dataset_id
      table   = google_bigquery_table.events.table_id
    })
    use_legacy_sql = false
  }
}
