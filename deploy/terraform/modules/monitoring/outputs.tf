output "alert_policies" {
  description = "Alert policy resource names."
  value = [
    google_monitoring_alert_policy.backlog_age.name,
    google_monitoring_alert_policy.dead_letters.name,
    google_monitoring_alert_policy.error_ratio.name,
    google_monitoring_alert_policy.latency.name,
  ]
}

output "dashboard_id" {
  description = "The dashboard's resource id."
  value       = google_monitoring_dashboard.skyjoin.id
}
