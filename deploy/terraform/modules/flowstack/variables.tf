# Inputs of the flowstack module. docs/deploy.md has them as a table, with
# the reasons behind the numbers; tests/deploy_numbers.rs (cargo test) reads
# the defaults of shutdown_budget, flowise_start_timeout, router_drain,
# deregistration_delay and alb_idle_timeout from this file and checks them
# against the Dockerfile, the unit files and docs/deploy.md.

# ---- where -----------------------------------------------------------------

variable "name" {
  description = "Name prefix of every resource (cluster, services, ALB, database, …)."
  type        = string
  default     = "flowstack"

  validation {
    # The ALB and target group names are at most 32 characters ("-tg" added).
    condition     = can(regex("^[a-z][a-z0-9-]{0,22}[a-z0-9]$", var.name))
    error_message = "name must be 2–24 characters of lower-case letters, digits and '-', starting with a letter (it prefixes the ALB and target group names, which AWS limits to 32 characters)."
  }
}

variable "vpc_id" {
  description = "The existing VPC to deploy into."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets (at least two AZs) for the internet-facing ALB."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "public_subnet_ids: an ALB needs subnets in at least two availability zones."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets (at least two AZs, with a NAT gateway or VPC endpoints for ECR, SSM, CloudWatch Logs) for the tasks, RDS, EFS and Redis."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids: RDS and EFS need subnets in at least two availability zones."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# ---- the image and the tasks -------------------------------------------------

variable "image" {
  description = "The FlowStack image (the Dockerfile's prod target), e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/flowstack:3.1.2."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ARN of the ECR repository the image is pulled from; the execution role may pull from this repository only. null when the image is public (no ECR permissions at all)."
  type        = string
  default     = null
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64 (the image is built for both)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "cpu" {
  description = "CPU units of the main task (1024 = 1 vCPU)."
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Memory of the main task, MiB."
  type        = number
  default     = 2048
}

variable "desired_count" {
  description = "Main replicas behind the ALB. More than 1 needs the shared secrets (FLOWISE_SECRETKEY_OVERWRITE, JWT_*, …: always set by this module) and, for uploads, STORAGE_TYPE=s3 or the shared EFS volume (docs/scaling.md)."
  type        = number
  default     = 1
}

variable "enable_execute_command" {
  description = "ECS Exec (`aws ecs execute-command … flowinit status`). Adds the ssmmessages permissions to the task role only when true."
  type        = bool
  default     = false
}

variable "admin_email" {
  description = "FLOWISE_USERNAME: the e-mail of the first admin, seeded once by the seed-admin unit together with the FLOWISE_PASSWORD secret. null: no seeding, create the account in the UI."
  type        = string
  default     = null
}

variable "app_url" {
  description = "APP_URL given to Flowise (the public https:// URL users reach). null: not set."
  type        = string
  default     = null
}

variable "extra_environment" {
  description = "More plain environment variables for the main and worker containers (LOG_LEVEL, CORS_ORIGINS, STORAGE_TYPE, S3_STORAGE_BUCKET_NAME, …). Never secrets: those go in extra_secrets."
  type        = map(string)
  default     = {}

  validation {
    # The secret names this module passes from SSM, and any name that looks
    # like a secret: a value given here would be plain text in the task
    # definition (readable with ecs:DescribeTaskDefinition) and in the state.
    condition = alltrue([
      for k in keys(var.extra_environment) :
      !contains([
        "DATABASE_PASSWORD", "FLOWISE_PASSWORD", "FLOWISE_SECRETKEY_OVERWRITE",
        "JWT_AUTH_TOKEN_SECRET", "JWT_REFRESH_TOKEN_SECRET", "EXPRESS_SESSION_SECRET",
        "TOKEN_HASH_SECRET", "REDIS_URL", "DATABASE_SSL_KEY_BASE64",
      ], k) && !can(regex("(?i)(PASSWORD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|ACCESS_KEY)", k))
    ])
    error_message = "extra_environment must not carry secrets (DATABASE_PASSWORD, FLOWISE_PASSWORD, FLOWISE_SECRETKEY_OVERWRITE, JWT_*_SECRET, EXPRESS_SESSION_SECRET, TOKEN_HASH_SECRET, REDIS_URL, or any name containing PASSWORD, SECRET, TOKEN, PRIVATE_KEY, API_KEY, ACCESS_KEY): put an SSM SecureString ARN in extra_secrets instead."
  }

  validation {
    condition = alltrue([
      for k in keys(var.extra_environment) :
      !contains([
        "FLOWINIT_SHUTDOWN_TIMEOUT", "FLOWINIT_PROFILES", "FLOWINIT_LOG_FORMAT",
        "DATABASE_HOST", "DATABASE_PORT", "DATABASE_NAME", "DATABASE_USER",
      ], k)
    ])
    error_message = "extra_environment must not override what the module derives: FLOWINIT_SHUTDOWN_TIMEOUT (from shutdown_budget), FLOWINIT_PROFILES (from enable_worker), FLOWINIT_LOG_FORMAT, DATABASE_HOST/PORT/NAME/USER (from the RDS instance)."
  }
}

variable "extra_secrets" {
  description = "More secrets for the main and worker containers: environment name => ARN of an SSM parameter (SecureString), e.g. { OPENAI_API_KEY = \"arn:aws:ssm:…:parameter/flowstack/openai\" }. The execution role may read exactly these and the module's own."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for arn in values(var.extra_secrets) : can(regex("^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter/.+", arn))])
    error_message = "extra_secrets: every value must be the ARN of an SSM parameter (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)."
  }
}

# ---- shutdown: one number ------------------------------------------------------

variable "shutdown_budget" {
  description = "flowinit's shutdown budget, seconds: FLOWINIT_SHUTDOWN_TIMEOUT = \"<budget>s\", and the containers' stopTimeout = budget + 2 (ECS sends SIGKILL at stopTimeout; the 2 s are flowinit's final sweep and output)."
  type        = number
  default     = 28

  validation {
    condition     = var.shutdown_budget == floor(var.shutdown_budget) && var.shutdown_budget >= 5 && var.shutdown_budget <= 118
    error_message = "shutdown_budget must be a whole number of seconds from 5 to 118: the container stopTimeout is shutdown_budget + 2, and Fargate's maximum stopTimeout is 120 s (below 5 s the router's own drain does not fit)."
  }
}

variable "router_drain" {
  description = "Seconds the router drains requests in flight on shutdown: the router unit's stop_timeout (5 s, flowinit's default; units/router.toml sets none). Change it only together with the router unit of your image."
  type        = number
  default     = 5

  validation {
    condition     = var.router_drain >= 1 && var.router_drain == floor(var.router_drain)
    error_message = "router_drain must be a whole number of seconds, at least 1."
  }
}

variable "deregistration_delay" {
  description = "Target group deregistration delay, seconds. ECS waits for it (the ALB stops sending new requests and drains the ones in flight) before it sends SIGTERM. A precondition on the target group requires deregistration_delay + router_drain <= shutdown_budget (default 20 = 28 - 5 - 3 s margin)."
  type        = number
  default     = 20

  validation {
    condition     = var.deregistration_delay >= 0 && var.deregistration_delay <= 3600 && var.deregistration_delay == floor(var.deregistration_delay)
    error_message = "deregistration_delay must be a whole number of seconds from 0 to 3600 (the ALB's range)."
  }
}

# ---- health ------------------------------------------------------------------

variable "flowise_start_timeout" {
  description = "The flowise unit's readiness start_timeout, seconds (units/flowise.toml: 180 s, the first boot runs the migrations). The container health check's startPeriod and the service's health_check_grace_period_seconds are this + 20 s."
  type        = number
  default     = 180

  validation {
    condition     = var.flowise_start_timeout >= 180 && var.flowise_start_timeout + 20 <= 300
    error_message = "flowise_start_timeout must be at least 180 (the shipped units/flowise.toml) and at most 280: the container startPeriod (this + 20 s) is limited to 300 s by ECS."
  }
}

# ---- the load balancer ------------------------------------------------------------

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener."
  type        = string
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "alb_ingress_cidrs" {
  description = "IPv4 ranges allowed to reach the ALB on 443 and 80 (80 only redirects to 443)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "alb_idle_timeout" {
  description = "ALB idle timeout, seconds. Must stay below the router's header_timeout (75 s): the ALB must close an idle keep-alive connection before the router does, or it sends a request into a closing connection (a 502)."
  type        = number
  default     = 60

  validation {
    condition     = var.alb_idle_timeout >= 1 && var.alb_idle_timeout < local.router_header_timeout
    error_message = "alb_idle_timeout must be from 1 to 74 seconds: below the router's header_timeout (75 s, docs/router.md), so that the ALB, not the router, closes idle keep-alive connections."
  }
}

variable "alb_deletion_protection" {
  description = "Deletion protection of the ALB."
  type        = bool
  default     = true
}

variable "alb_access_logs_bucket" {
  description = "S3 bucket for the ALB's access logs (its policy must let the region's ELB account write). null: no access logs."
  type        = string
  default     = null
}

variable "alb_access_logs_prefix" {
  description = "Key prefix of the ALB's access logs."
  type        = string
  default     = "flowstack-alb"
}

variable "waf_web_acl_arn" {
  description = "A WAFv2 web ACL (REGIONAL) to associate with the ALB. null: none."
  type        = string
  default     = null
}

# ---- secrets (SSM Parameter Store) -------------------------------------------------

variable "database_password_parameter_arn" {
  description = "ARN of the SSM SecureString holding the database password: the RDS master password and the tasks' DATABASE_PASSWORD come from this one parameter."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter/.+", var.database_password_parameter_arn))
    error_message = "database_password_parameter_arn must be the ARN of an SSM parameter (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)."
  }
}

variable "secret_parameter_arns" {
  description = "ARNs of the SSM SecureStrings of the Flowise secrets every replica and worker must share (docs/scaling.md)."
  type = object({
    FLOWISE_PASSWORD            = string
    FLOWISE_SECRETKEY_OVERWRITE = string
    JWT_AUTH_TOKEN_SECRET       = string
    JWT_REFRESH_TOKEN_SECRET    = string
    EXPRESS_SESSION_SECRET      = string
    TOKEN_HASH_SECRET           = string
  })

  validation {
    condition     = alltrue([for arn in values(var.secret_parameter_arns) : can(regex("^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter/.+", arn))])
    error_message = "secret_parameter_arns: every value must be the ARN of an SSM parameter (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)."
  }
}

variable "database_ca_bundle_parameter_arn" {
  description = "ARN of an SSM parameter holding the base64 of the RDS CA bundle (global-bundle.pem). Set: the tasks get DATABASE_SSL_KEY_BASE64 from it and DATABASE_REJECT_UNAUTHORIZED=true, and the database requires TLS (rds.force_ssl=1). null: plain connections inside the VPC."
  type        = string
  default     = null

  validation {
    condition     = var.database_ca_bundle_parameter_arn == null || can(regex("^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter/.+", var.database_ca_bundle_parameter_arn))
    error_message = "database_ca_bundle_parameter_arn must be null or the ARN of an SSM parameter."
  }
}

variable "secrets_kms_key_arn" {
  description = "Customer managed KMS key of the SecureStrings (kms:Decrypt via SSM is granted on it only). null: they use the AWS managed key aws/ssm, which needs no KMS permission."
  type        = string
  default     = null
}

# ---- logs ---------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the CloudWatch log group."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of CloudWatch's values: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

variable "log_kms_key_arn" {
  description = "KMS key for the log group (its key policy must allow logs.<region>.amazonaws.com). null: CloudWatch's default encryption."
  type        = string
  default     = null
}

# ---- database (RDS PostgreSQL 15) ------------------------------------------------

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_engine_version" {
  description = "PostgreSQL version: the major version 15 (RDS picks the newest minor and upgrades minors in the maintenance window) or a 15.x."
  type        = string
  default     = "15"

  validation {
    condition     = can(regex("^15(\\.[0-9]+)?$", var.db_engine_version))
    error_message = "db_engine_version must be 15 or 15.x: the image and its tests use PostgreSQL 15."
  }
}

variable "db_allocated_storage" {
  description = "Initial storage, GiB (gp3)."
  type        = number
  default     = 20
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling limit, GiB (0: off)."
  type        = number
  default     = 100
}

variable "db_name" {
  description = "Database name (DATABASE_NAME)."
  type        = string
  default     = "flowise"
}

variable "db_username" {
  description = "Master user, used by Flowise (DATABASE_USER)."
  type        = string
  default     = "flowise"
}

variable "db_multi_az" {
  description = "A standby in a second AZ with automatic failover."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery)."
  type        = number
  default     = 7

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be from 7 to 35: a week of point-in-time recovery at least (Flowise migrates its schema at start; an upgrade cannot be rolled back without a backup)."
  }
}

variable "db_deletion_protection" {
  description = "Deletion protection of the RDS instance (and a final snapshot on destroy)."
  type        = bool
  default     = true
}

variable "db_kms_key_arn" {
  description = "KMS key for the database storage and Performance Insights. null: the AWS managed key aws/rds."
  type        = string
  default     = null
}

variable "db_performance_insights" {
  description = "Performance Insights (7 days, free tier)."
  type        = bool
  default     = true
}

# ---- EFS (the data volume) ------------------------------------------------------

variable "efs_kms_key_arn" {
  description = "KMS key for the file system. null: the AWS managed key aws/elasticfilesystem."
  type        = string
  default     = null
}

# ---- queue mode: worker service + ElastiCache Redis ----------------------------------

variable "enable_worker" {
  description = "Queue mode (docs/scaling.md): an ElastiCache Redis, a worker service (FLOWINIT_PROFILES=worker) and FLOWINIT_PROFILES=queue on the main service."
  type        = bool
  default     = false
}

variable "worker_cpu" {
  description = "CPU units of a worker task."
  type        = number
  default     = 1024
}

variable "worker_memory" {
  description = "Memory of a worker task, MiB. The flowise-worker unit restarts the worker gracefully above memory_max = 2 GiB, so the task needs more than that, or the kernel's OOM killer is first (docs/scaling.md: 3 GiB)."
  type        = number
  default     = 3072

  validation {
    condition     = var.worker_memory > 2048
    error_message = "worker_memory must be above 2048 MiB: units/flowise-worker.toml restarts the worker gracefully above memory_max = 2 GiB, which a task of 2 GiB or less never reaches (the kernel kills it first, mid-job)."
  }
}

variable "worker_desired_count" {
  description = "Worker tasks (when enable_worker)."
  type        = number
  default     = 1
}

variable "redis_auth_token_parameter_arn" {
  description = "ARN of the SSM SecureString with the Redis AUTH token (16–128 printable characters, no @, \", /). Required when enable_worker."
  type        = string
  default     = null

  validation {
    condition     = var.redis_auth_token_parameter_arn == null || can(regex("^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter/.+", var.redis_auth_token_parameter_arn))
    error_message = "redis_auth_token_parameter_arn must be null or the ARN of an SSM parameter."
  }

  validation {
    condition     = !var.enable_worker || var.redis_auth_token_parameter_arn != null
    error_message = "enable_worker needs redis_auth_token_parameter_arn: the Redis of queue mode always has an AUTH token."
  }
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "redis_engine_version" {
  description = "Redis OSS engine version."
  type        = string
  default     = "7.1"
}

variable "redis_num_cache_clusters" {
  description = "Nodes in the replication group (1 primary + replicas); 2 or more turns on automatic failover and Multi-AZ."
  type        = number
  default     = 2

  validation {
    condition     = var.redis_num_cache_clusters >= 1 && var.redis_num_cache_clusters <= 6
    error_message = "redis_num_cache_clusters must be from 1 to 6."
  }
}

variable "redis_kms_key_arn" {
  description = "KMS key for Redis at-rest encryption. null: the AWS managed key."
  type        = string
  default     = null
}
