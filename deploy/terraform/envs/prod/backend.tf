# State in a GCS bucket made by hand before the first apply (docs/deploy.md):
#   gcloud storage buckets create gs://PROJECT-tfstate --location=EU --uniform-bucket-level-access
#   gcloud storage buckets update gs://PROJECT-tfstate --versioning
# then: tofu init -backend-config=bucket=PROJECT-tfstate
terraform {
  backend "gcs" {
    prefix = "skyjoin/prod"
  }
}
