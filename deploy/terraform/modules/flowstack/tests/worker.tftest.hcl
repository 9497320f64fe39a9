# Queue mode (enable_worker = true): the worker service and ElastiCache Redis
# exist, main runs FLOWINIT_PROFILES=queue, and Redis is reachable from the
# tasks only, with TLS and an AUTH token.

mock_provider "aws" {
  override_during = plan
  source          = "./tests"
}

# Distinct security group ids at plan time, so that the rules can be told apart.
override_resource {
  target          = aws_security_group.alb
  override_during = plan
  values          = { id = "sg-alb" }
}
override_resource {
  target          = aws_security_group.tasks
  override_during = plan
  values          = { id = "sg-tasks" }
}
override_resource {
  target          = aws_security_group.rds
  override_during = plan
  values          = { id = "sg-rds" }
}
override_resource {
  target          = aws_security_group.efs
  override_during = plan
  values          = { id = "sg-efs" }
}
override_resource {
  target          = aws_security_group.worker
  override_during = plan
  values          = { id = "sg-worker" }
}
override_resource {
  target          = aws_security_group.redis
  override_during = plan
  values          = { id = "sg-redis" }
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

  enable_worker                  = true
  redis_auth_token_parameter_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/redis-auth-token" # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
}

run "worker_resources_exist" {
  command = plan

  assert {
    condition = (
      length(aws_ecs_task_definition.worker) == 1 && length(aws_ecs_service.worker) == 1 &&
      length(aws_elasticache_replication_group.redis) == 1 && length(aws_ssm_parameter.redis_url) == 1 &&
      length(aws_security_group.worker) == 1 && length(aws_security_group.redis) == 1
    )
    error_message = "one of each worker resource when enabled"
  }
}

run "main_in_queue_mode" {
  command = plan

  assert {
    condition = one([
      for e in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].environment : e.value
      if e.name == "FLOWINIT_PROFILES"
    ]) == "queue"
    error_message = "main: FLOWINIT_PROFILES=queue"
  }
  assert {
    condition = one([
      for s in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].secrets : s.valueFrom
      if s.name == "REDIS_URL"
    ]) == aws_ssm_parameter.redis_url[0].arn
    error_message = "main: REDIS_URL from the module's SecureString"
  }
  assert {
    condition     = !contains([for e in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].environment : e.name], "REDIS_URL")
    error_message = "REDIS_URL never in environment"
  }
}

run "worker_task_definition" {
  command = plan

  assert {
    condition     = jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].image == var.image
    error_message = "the same image"
  }
  assert {
    condition = one([
      for e in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].environment : e.value
      if e.name == "FLOWINIT_PROFILES"
    ]) == "worker"
    error_message = "worker: FLOWINIT_PROFILES=worker"
  }
  assert {
    condition     = !can(jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].portMappings)
    error_message = "worker: no port mapping"
  }
  assert {
    condition     = length(aws_ecs_service.worker[0].load_balancer) == 0
    error_message = "worker: no load balancer"
  }
  assert {
    condition = (
      jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].stopTimeout == var.shutdown_budget + 2 &&
      one([for e in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].environment : e.value if e.name == "FLOWINIT_SHUTDOWN_TIMEOUT"]) == "${var.shutdown_budget}s"
    )
    error_message = "worker: the same budget and stopTimeout"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].healthCheck.command == ["CMD", "/usr/local/bin/flowinit", "status", "--quiet"]
    error_message = "worker: health is flowinit status --quiet"
  }
  assert {
    condition = (
      contains([for s in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].secrets : s.name], "REDIS_URL") &&
      contains([for s in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].secrets : s.name], "FLOWISE_SECRETKEY_OVERWRITE") &&
      contains([for s in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].secrets : s.name], "DATABASE_PASSWORD") &&
      !contains([for s in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].secrets : s.name], "FLOWISE_PASSWORD")
    )
    error_message = "worker: the shared secrets and REDIS_URL, not the admin password"
  }
  assert {
    condition = length(setintersection(
      toset([for e in jsondecode(aws_ecs_task_definition.worker[0].container_definitions)[0].environment : e.name]),
      toset(["DATABASE_PASSWORD", "FLOWISE_PASSWORD", "FLOWISE_SECRETKEY_OVERWRITE", "JWT_AUTH_TOKEN_SECRET",
      "JWT_REFRESH_TOKEN_SECRET", "EXPRESS_SESSION_SECRET", "TOKEN_HASH_SECRET", "REDIS_URL"]),
    )) == 0
    error_message = "worker: no secret in environment"
  }
  assert {
    condition     = aws_ecs_task_definition.worker[0].cpu == "1024" && aws_ecs_task_definition.worker[0].memory == "3072"
    error_message = "worker: 1024 CPU, 3072 MiB (above flowise-worker's memory_max 2 GiB)"
  }
  assert {
    condition = (
      aws_ecs_service.worker[0].network_configuration[0].assign_public_ip == false &&
      aws_ecs_service.worker[0].network_configuration[0].security_groups == toset([aws_security_group.worker[0].id])
    )
    error_message = "worker: private, its own group"
  }
}

run "redis_encrypted_with_auth" {
  command = plan

  assert {
    condition = (
      aws_elasticache_replication_group.redis[0].transit_encryption_enabled == true &&
      tostring(aws_elasticache_replication_group.redis[0].at_rest_encryption_enabled) == "true"
    )
    error_message = "Redis: transit and at-rest encryption"
  }
  assert {
    condition     = aws_elasticache_replication_group.redis[0].auth_token == data.aws_ssm_parameter.redis_auth_token[0].value && data.aws_ssm_parameter.redis_auth_token[0].name == var.redis_auth_token_parameter_arn
    error_message = "Redis: the AUTH token from the SSM parameter"
  }
  assert {
    condition     = one([for p in aws_elasticache_parameter_group.redis[0].parameter : p.value if p.name == "maxmemory-policy"]) == "noeviction"
    error_message = "Redis: noeviction (BullMQ)"
  }
  assert {
    condition     = startswith(aws_ssm_parameter.redis_url[0].value, "rediss://:") && aws_ssm_parameter.redis_url[0].type == "SecureString"
    error_message = "REDIS_URL: rediss:// with the token, a SecureString"
  }
}

run "security_groups_with_worker" {
  command = plan

  assert {
    condition = (
      toset(keys(aws_vpc_security_group_ingress_rule.redis_from_tasks)) == toset(["main", "worker"]) &&
      alltrue([for r in aws_vpc_security_group_ingress_rule.redis_from_tasks :
        r.security_group_id == "sg-redis" && r.from_port == 6379 && r.to_port == 6379 &&
      contains(["sg-tasks", "sg-worker"], r.referenced_security_group_id) && r.cidr_ipv4 == null])
    )
    error_message = "Redis: 6379 from the main and worker groups only"
  }
  assert {
    condition = (
      toset([for r in aws_vpc_security_group_ingress_rule.rds_from_tasks : r.referenced_security_group_id]) == toset(["sg-tasks", "sg-worker"]) &&
      alltrue([for r in aws_vpc_security_group_ingress_rule.rds_from_tasks : r.from_port == 5432 && r.security_group_id == "sg-rds"])
    )
    error_message = "RDS: 5432 from both task groups"
  }
  assert {
    condition     = toset([for r in aws_vpc_security_group_ingress_rule.efs_from_tasks : r.referenced_security_group_id]) == toset(["sg-tasks", "sg-worker"])
    error_message = "EFS: 2049 from both task groups"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.tasks_from_alb.security_group_id == "sg-tasks"
    error_message = "no ingress to the worker: the only task ingress rule is on the main group"
  }
}

run "iam_reads_the_redis_url_too" {
  command = plan

  assert {
    condition = toset(one([
      for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s.Resource if s.Sid == "ReadTheNamedParameters"
    ])) == toset(concat([var.database_password_parameter_arn], values(var.secret_parameter_arns), [aws_ssm_parameter.redis_url[0].arn]))
    error_message = "the execution role reads the named parameters and the REDIS_URL parameter, nothing else"
  }
  assert {
    condition     = !contains(one([for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s.Resource if s.Sid == "ReadTheNamedParameters"]), var.redis_auth_token_parameter_arn)
    error_message = "the tasks never read the raw AUTH token parameter (Terraform does)"
  }
}
