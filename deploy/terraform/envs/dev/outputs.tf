output "service_urls" {
  description = "Each service's URL."
  value       = module.skyjoin.service_urls
}

output "image_base" {
  description = "Where the delivery pipeline pushes images."
  value       = module.skyjoin.image_base
}

output "workload_identity_provider" {
  description = "For google-github-actions/auth."
  value       = module.skyjoin.workload_identity_provider
}

output "deployer_service_account" {
  description = "For google-github-actions/auth."
  value       = module.skyjoin.deployer_service_account
}

output "secrets" {
  description = "Secrets to give a version before the first deploy."
  value       = module.skyjoin.secrets
}

output "store_url" {
  description = "The --store URL (skyjoin migrate, replay)."
  value       = module.skyjoin.store_url
}
