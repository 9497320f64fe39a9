# Deliberately broken settings: each run must FAIL the plan on the named
# validation or precondition (expect_failures). A run passes only if that
# check fails.

mock_provider "aws" {
  override_during = plan
  source          = "./tests"
}

variables {
  vpc_id             = "vpc-0123456789abcdef0"
  public_subnet_ids  = ["subnet-public-a", "subnet-public-b"]
  private_subnet_ids = ["subnet-private-a", "subnet-private-b"]
  image              = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/flowstack:3.1.2"
  certificate_arn    = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"

  database_password_parameter_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/database-password" # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
  secret_parameter_arns = {
    FLOWISE_PASSWORD            = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/admin-password" # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
    FLOWISE_SECRETKEY_OVERWRITE = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/encryption-key" # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
    JWT_AUTH_TOKEN_SECRET       = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/jwt-auth"       # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
    JWT_REFRESH_TOKEN_SECRET    = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/jwt-refresh"    # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
    EXPRESS_SESSION_SECRET      = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/session"        # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
    TOKEN_HASH_SECRET           = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/token-hash"     # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
  }
}

# A budget whose stopTimeout (152) is above Fargate's 120 s.
run "budget_above_fargate_limit" {
  command = plan
  variables {
    shutdown_budget = 150
  }
  expect_failures = [var.shutdown_budget]
}

# 119 + 2 = 121: just above the limit.
run "budget_one_above_the_edge" {
  command = plan
  variables {
    shutdown_budget = 119
  }
  expect_failures = [var.shutdown_budget]
}

run "budget_too_small_for_the_router_drain" {
  command = plan
  variables {
    shutdown_budget = 4
  }
  expect_failures = [var.shutdown_budget]
}

# 118 is the largest that works (stopTimeout 120).
run "budget_at_the_edge_is_accepted" {
  command = plan
  variables {
    shutdown_budget      = 118
    deregistration_delay = 100
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].stopTimeout == 120
    error_message = "budget 118 gives stopTimeout 120"
  }
}

# 25 + 5 > 28: the ALB would still be draining when the budget ends.
run "deregistration_delay_longer_than_the_budget_allows" {
  command = plan
  variables {
    deregistration_delay = 25
  }
  expect_failures = [aws_lb_target_group.main]
}

# A shorter budget with the default delay: 20 + 5 > 20.
run "budget_shortened_without_the_delay" {
  command = plan
  variables {
    shutdown_budget = 20
  }
  expect_failures = [aws_lb_target_group.main]
}

run "idle_timeout_equal_to_header_timeout" {
  command = plan
  variables {
    alb_idle_timeout = 75
  }
  expect_failures = [var.alb_idle_timeout]
}

run "idle_timeout_above_header_timeout" {
  command = plan
  variables {
    alb_idle_timeout = 120
  }
  expect_failures = [var.alb_idle_timeout]
}

# A secret in plain environment.
run "database_password_in_plain_env" {
  command = plan
  variables {
    extra_environment = { DATABASE_PASSWORD = "hunter2-in-the-task-definition" } # checkov:skip=CKV_SECRET_6:a deliberately misplaced fake value; the test shows the module refuses it
  }
  expect_failures = [var.extra_environment]
}

run "secret_looking_name_in_plain_env" {
  command = plan
  variables {
    extra_environment = { OPENAI_API_KEY = "sk-in-the-task-definition" } # checkov:skip=CKV_SECRET_6:a deliberately misplaced fake value; the test shows the module refuses it
  }
  expect_failures = [var.extra_environment]
}

run "overriding_the_derived_budget" {
  command = plan
  variables {
    extra_environment = { FLOWINIT_SHUTDOWN_TIMEOUT = "90s" }
  }
  expect_failures = [var.extra_environment]
}

# A name given both as a secret and as plain env passes both variables'
# own checks; the task definition's precondition catches it.
run "same_name_as_secret_and_plain_env" {
  command = plan
  variables {
    extra_secrets     = { LANGFUSE_PUBLIC = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/langfuse" } # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
    extra_environment = { LANGFUSE_PUBLIC = "pk-in-the-task-definition" }
  }
  expect_failures = [aws_ecs_task_definition.main]
}

run "secret_not_from_ssm" {
  command = plan
  variables {
    extra_secrets = { OPENAI_API_KEY = "sk-plain-value" } # checkov:skip=CKV_SECRET_6:a deliberately misplaced fake value; the test shows the module refuses it
  }
  expect_failures = [var.extra_secrets]
}

run "shared_secret_not_an_ssm_arn" {
  command = plan
  variables {
    secret_parameter_arns = {
      FLOWISE_PASSWORD            = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/admin-password" # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
      FLOWISE_SECRETKEY_OVERWRITE = "a-key-pasted-here"
      JWT_AUTH_TOKEN_SECRET       = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/jwt-auth"    # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
      JWT_REFRESH_TOKEN_SECRET    = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/jwt-refresh" # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
      EXPRESS_SESSION_SECRET      = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/session"     # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
      TOKEN_HASH_SECRET           = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/token-hash"  # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
    }
  }
  expect_failures = [var.secret_parameter_arns]
}

run "backups_shorter_than_a_week" {
  command = plan
  variables {
    db_backup_retention_days = 3
  }
  expect_failures = [var.db_backup_retention_days]
}

run "start_period_shorter_than_flowise_start_timeout" {
  command = plan
  variables {
    flowise_start_timeout = 60
  }
  expect_failures = [var.flowise_start_timeout]
}

run "worker_without_redis_token" {
  command = plan
  variables {
    enable_worker = true
  }
  expect_failures = [var.redis_auth_token_parameter_arn]
}

run "worker_memory_at_memory_max" {
  command = plan
  variables {
    worker_memory = 2048
  }
  expect_failures = [var.worker_memory]
}

run "postgres_other_than_15" {
  command = plan
  variables {
    db_engine_version = "16.3"
  }
  expect_failures = [var.db_engine_version]
}
