output "name" {
  description = "Service name."
  value       = google_cloud_run_v2_service.this.name
}

output "uri" {
  description = "The service's main URL."
  value       = google_cloud_run_v2_service.this.uri
}

output "url" {
  description = "The service's deterministic URL, https://NAME-PROJECT_NUMBER.REGION.run.app: the audience skyjoin checks callers' ID tokens against on Cloud Run."
  value       = "https://${google_cloud_run_v2_service.this.name}-${data.google_project.this.number}.${var.region}.run.app"
}
