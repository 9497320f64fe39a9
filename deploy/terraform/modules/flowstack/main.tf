# The numbers every other file derives from, in one place. docs/deploy.md
# "The numbers" explains each; tests/*.tftest.hcl assert them.

data "aws_region" "current" {}

locals {
  tags = merge({ "app" = "flowstack", "managed-by" = "terraform" }, var.tags)

  # The image's fixed facts.
  port      = 3000                 # the router (units/router.toml), the only public port
  data_path = "/var/lib/flowstack" # FLOWSTACK_DATA, the image's VOLUME
  node_uid  = 1000                 # user node of node:*-alpine, owner of FLOWSTACK_DATA/flowise

  # The router's header_timeout (flowinit's default, docs/router.md): how long
  # it keeps an idle keep-alive connection. The ALB must give up first.
  router_header_timeout = 75

  # Shutdown: one variable. ECS sends SIGTERM, waits stopTimeout, then
  # SIGKILL; flowinit's budget ends 2 s before that (its final sweep).
  stop_timeout = var.shutdown_budget + 2

  # Health: the Dockerfile's HEALTHCHECK numbers (tests/deploy_numbers.rs
  # checks they agree). startPeriod covers Flowise's first boot.
  health_check = {
    command     = ["CMD", "/usr/local/bin/flowinit", "status", "--quiet"]
    interval    = 15
    timeout     = 5
    retries     = 3
    startPeriod = var.flowise_start_timeout + 20
  }
  start_period = local.health_check.startPeriod

  # Secrets: environment name => SSM parameter ARN. Only these names, and
  # those of extra_secrets, are readable by the execution role.
  base_secrets = merge(
    { DATABASE_PASSWORD = var.database_password_parameter_arn },
    var.secret_parameter_arns,
    var.database_ca_bundle_parameter_arn == null ? {} : { DATABASE_SSL_KEY_BASE64 = var.database_ca_bundle_parameter_arn },
    var.enable_worker ? { REDIS_URL = aws_ssm_parameter.redis_url[0].arn } : {},
  )
  main_secrets = merge(var.extra_secrets, local.base_secrets)
  # The worker runs no seed-admin: it does not need the admin's password.
  worker_secrets = { for k, v in local.main_secrets : k => v if k != "FLOWISE_PASSWORD" }

  secret_names = sort(keys(local.main_secrets))
  secret_arns  = sort(distinct(values(local.main_secrets)))

  # Plain environment, shared by main and worker.
  common_environment = merge(
    var.extra_environment,
    {
      FLOWINIT_SHUTDOWN_TIMEOUT = "${var.shutdown_budget}s"
      FLOWINIT_LOG_FORMAT       = "json"
      DATABASE_HOST             = aws_db_instance.main.address
      DATABASE_PORT             = tostring(aws_db_instance.main.port)
      DATABASE_NAME             = var.db_name
      DATABASE_USER             = var.db_username
    },
    var.database_ca_bundle_parameter_arn == null ? {} : { DATABASE_REJECT_UNAUTHORIZED = "true" },
  )
  main_environment = merge(
    local.common_environment,
    {
      # TLS ends at the ALB; users reach the service over https only.
      SECURE_COOKIES = "true"
    },
    var.app_url == null ? {} : { APP_URL = var.app_url },
    var.admin_email == null ? {} : { FLOWISE_USERNAME = var.admin_email },
    var.enable_worker ? { FLOWINIT_PROFILES = "queue" } : {},
  )
  worker_environment = merge(local.common_environment, { FLOWINIT_PROFILES = "worker" })

  # awslogs with JSON lines from flowinit (FLOWINIT_LOG_FORMAT=json).
  # non-blocking: a slow CloudWatch never stalls flowinit's output.
  log_configuration = {
    logDriver = "awslogs"
    options = {
      "awslogs-group"         = aws_cloudwatch_log_group.main.name
      "awslogs-region"        = data.aws_region.current.name
      "awslogs-stream-prefix" = "flowstack"
      "mode"                  = "non-blocking"
      "max-buffer-size"       = "25m"
    }
  }
}
