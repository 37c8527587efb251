output "dataset_id" {
  description = "The dataset id."
  value       = google_bigquery_dataset.this.dataset_id
}

output "table_id" {
  description = "The events table, as PROJECT:DATASET.TABLE (the form Beam's BigQuery IO takes)."
  value       = "${var.project}:${google_bigquery_dataset.this.dataset_id}.${google_bigquery_table.events.table_id}"
}

output "store_url" {
  description = "skyjoin's --store URL for this table."
  value       = "bigquery://${var.project}/${google_bigquery_dataset.this.dataset_id}?table=${google_bigquery_table.events.table_id}&location=${var.location}&retention=${var.retention_days}d"
}
