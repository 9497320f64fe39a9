# A root module that deploys FlowStack on ECS Fargate with the flowstack
# module: copy this directory, fill in terraform.tfvars and the backend.
#
#   cp terraform.tfvars.example terraform.tfvars        # and edit it
#   terraform init \
#     -backend-config="bucket=my-terraform-state" \
#     -backend-config="key=flowstack/prod.tfstate" \
#     -backend-config="region=eu-west-1"
#   terraform plan -out=flowstack.tfplan && terraform apply flowstack.tfplan
#
# The state holds the database password and the Redis AUTH token (the
# module reads them from SSM to set them on RDS and ElastiCache): keep it in
# an encrypted bucket that only the deployers can read.

terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # S3 state with S3-native locking (use_lockfile, Terraform >= 1.10; no
  # DynamoDB table needed). On older Terraform replace use_lockfile with
  # dynamodb_table = "terraform-locks". The placeholders are overridden by
  # -backend-config at init (above); a backend block cannot use variables.
  backend "s3" {
    bucket       = "REPLACE-ME-terraform-state"
    key          = "flowstack/terraform.tfstate"
    region       = "eu-west-1"
    encrypt      = true
    use_lockfile = true
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      project     = "flowstack"
      environment = var.environment
    }
  }
}

module "flowstack" {
  source = "../../modules/flowstack"

  name               = var.name
  vpc_id             = var.vpc_id
  public_subnet_ids  = var.public_subnet_ids
  private_subnet_ids = var.private_subnet_ids

  image              = var.image
  ecr_repository_arn = var.ecr_repository_arn
  certificate_arn    = var.certificate_arn
  app_url            = var.app_url
  admin_email        = var.admin_email

  database_password_parameter_arn = var.database_password_parameter_arn
  secret_parameter_arns           = var.secret_parameter_arns
  secrets_kms_key_arn             = var.secrets_kms_key_arn

  db_multi_az   = var.db_multi_az
  desired_count = var.desired_count

  enable_worker                  = var.enable_worker
  redis_auth_token_parameter_arn = var.redis_auth_token_parameter_arn

  extra_environment = var.extra_environment
}

output "alb_dns_name" {
  description = "Point your DNS name (APP_URL) at this."
  value       = module.flowstack.alb_dns_name
}

output "shutdown" {
  description = "The derived shutdown and health numbers."
  value       = module.flowstack.shutdown
}
