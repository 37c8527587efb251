output "service_urls" {
  description = "Each service's deterministic URL (https://NAME-PROJECT_NUMBER.REGION.run.app)."
  value       = { for stage, s in module.service : stage => s.url }
}

output "service_accounts" {
  description = "Each service's own service account."
  value       = { for stage, sa in google_service_account.service : stage => sa.email }
}

output "image_base" {
  description = "Where the delivery pipeline pushes images."
  value       = module.artifact_registry.image_base
}

output "workload_identity_provider" {
  description = "For google-github-actions/auth: workload_identity_provider."
  value       = module.wif.provider_name
}

output "deployer_service_account" {
  description = "For google-github-actions/auth: service_account."
  value       = module.wif.deployer_email
}

output "secrets" {
  description = "Secret Manager secrets to give a version before the first deploy."
  value       = sort(keys(google_secret_manager_secret.this))
}

output "store_url" {
  description = "The --store URL of this environment (for skyjoin migrate and replay)."
  value       = module.bigquery.store_url
}

output "dataflow_bucket" {
  description = "With worker_mode dataflow: the bucket of the template spec."
  value       = local.dataflow ? google_storage_bucket.dataflow[0].name : null
}
