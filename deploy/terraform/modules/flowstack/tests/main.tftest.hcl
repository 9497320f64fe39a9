# The module with its defaults (no worker): every invariant of
# docs/deploy.md "The numbers", on the planned resources.
#   terraform test          # from deploy/terraform/modules/flowstack

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

run "shutdown_budget_and_stop_timeout" {
  command = plan

  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].stopTimeout == var.shutdown_budget + 2
    error_message = "stopTimeout must be shutdown_budget + 2"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].stopTimeout > var.shutdown_budget
    error_message = "stopTimeout must be above the budget"
  }
  assert {
    condition     = var.shutdown_budget == 28 && jsondecode(aws_ecs_task_definition.main.container_definitions)[0].stopTimeout == 30
    error_message = "defaults: budget 28 s, stopTimeout 30 s"
  }
  assert {
    condition = one([
      for e in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].environment : e.value
      if e.name == "FLOWINIT_SHUTDOWN_TIMEOUT"
    ]) == "28s"
    error_message = "FLOWINIT_SHUTDOWN_TIMEOUT must be \"28s\""
  }
  assert {
    condition     = output.shutdown.flowinit_shutdown_timeout == "${var.shutdown_budget}s" && output.shutdown.stop_timeout == 30
    error_message = "the shutdown output must show the derived numbers"
  }
}

run "container_health_check" {
  command = plan

  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].healthCheck.command == ["CMD", "/usr/local/bin/flowinit", "status", "--quiet"]
    error_message = "the health check must run flowinit status --quiet"
  }
  assert {
    condition = (
      jsondecode(aws_ecs_task_definition.main.container_definitions)[0].healthCheck.interval == 15 &&
      jsondecode(aws_ecs_task_definition.main.container_definitions)[0].healthCheck.timeout == 5 &&
      jsondecode(aws_ecs_task_definition.main.container_definitions)[0].healthCheck.retries == 3
    )
    error_message = "health check interval/timeout/retries must be 15/5/3 (the Dockerfile's HEALTHCHECK)"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].healthCheck.startPeriod == 200
    error_message = "startPeriod must be 200 (flowise_start_timeout 180 + 20)"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].healthCheck.startPeriod >= var.flowise_start_timeout
    error_message = "startPeriod must cover Flowise's start_timeout"
  }
  assert {
    condition     = aws_ecs_service.main.health_check_grace_period_seconds == jsondecode(aws_ecs_task_definition.main.container_definitions)[0].healthCheck.startPeriod
    error_message = "the service's health_check_grace_period_seconds must equal the startPeriod"
  }
}

run "secrets_only_from_ssm" {
  command = plan

  assert {
    condition = alltrue([
      for n in ["DATABASE_PASSWORD", "FLOWISE_PASSWORD", "FLOWISE_SECRETKEY_OVERWRITE", "JWT_AUTH_TOKEN_SECRET",
      "JWT_REFRESH_TOKEN_SECRET", "EXPRESS_SESSION_SECRET", "TOKEN_HASH_SECRET"] :
      contains([for s in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].secrets : s.name], n)
    ])
    error_message = "every secret name must be in secrets"
  }
  assert {
    condition = length(setintersection(
      toset([for e in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].environment : e.name]),
      toset(["DATABASE_PASSWORD", "FLOWISE_PASSWORD", "FLOWISE_SECRETKEY_OVERWRITE", "JWT_AUTH_TOKEN_SECRET",
      "JWT_REFRESH_TOKEN_SECRET", "EXPRESS_SESSION_SECRET", "TOKEN_HASH_SECRET", "REDIS_URL", "DATABASE_SSL_KEY_BASE64"]),
    )) == 0
    error_message = "no secret name may be in environment"
  }
  assert {
    condition = alltrue([
      for e in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].environment :
      !can(regex("(?i)(PASSWORD|SECRET|TOKEN)", e.name))
    ])
    error_message = "no secret-looking name in environment"
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].secrets :
      startswith(s.valueFrom, "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/") # checkov:skip=CKV_SECRET_6:fake SSM ARN of a test fixture, not a secret
    ])
    error_message = "every secret must come from one of the given SSM parameters"
  }
  assert {
    condition = one([
      for s in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].secrets : s.valueFrom
      if s.name == "DATABASE_PASSWORD"
    ]) == var.database_password_parameter_arn
    error_message = "the task's DATABASE_PASSWORD must be the database password parameter"
  }
  assert {
    condition     = data.aws_ssm_parameter.database_password.name == var.database_password_parameter_arn && aws_db_instance.main.password == data.aws_ssm_parameter.database_password.value
    error_message = "the RDS master password must come from the same parameter"
  }
  assert {
    condition     = length(jsondecode(aws_ecs_task_definition.main.container_definitions)[0].secrets) == 7
    error_message = "exactly the 7 secrets without the worker"
  }
}

run "logs_to_cloudwatch_as_json" {
  command = plan

  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].logConfiguration.logDriver == "awslogs"
    error_message = "awslogs driver"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].logConfiguration.options["awslogs-group"] == aws_cloudwatch_log_group.main.name
    error_message = "logs go to the module's log group"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].logConfiguration.options["awslogs-region"] == "eu-west-1"
    error_message = "logs go to the current region"
  }
  assert {
    condition = one([
      for e in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].environment : e.value
      if e.name == "FLOWINIT_LOG_FORMAT"
    ]) == "json"
    error_message = "FLOWINIT_LOG_FORMAT=json"
  }
  assert {
    condition     = aws_cloudwatch_log_group.main.retention_in_days == 30 && aws_cloudwatch_log_group.main.kms_key_id == null
    error_message = "retention from the variable, no KMS by default"
  }
}

run "task_definition_shape" {
  command = plan

  assert {
    condition     = aws_ecs_task_definition.main.requires_compatibilities == toset(["FARGATE"]) && aws_ecs_task_definition.main.network_mode == "awsvpc"
    error_message = "a Fargate awsvpc task"
  }
  assert {
    condition     = aws_ecs_task_definition.main.cpu == "1024" && aws_ecs_task_definition.main.memory == "2048"
    error_message = "main: 1024 CPU, 2048 MiB"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].image == var.image
    error_message = "the image variable"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].portMappings[0].containerPort == 3000 && length(jsondecode(aws_ecs_task_definition.main.container_definitions)[0].portMappings) == 1
    error_message = "exactly port 3000"
  }
  assert {
    condition     = !contains([for e in jsondecode(aws_ecs_task_definition.main.container_definitions)[0].environment : e.name], "FLOWINIT_PROFILES")
    error_message = "without the worker, main runs without a profile (not queue mode)"
  }
}

run "efs_data_volume" {
  command = plan

  assert {
    condition     = aws_efs_file_system.data.encrypted == true
    error_message = "EFS encrypted at rest"
  }
  assert {
    condition     = one(aws_ecs_task_definition.main.volume).efs_volume_configuration[0].transit_encryption == "ENABLED"
    error_message = "EFS transit encryption ENABLED"
  }
  assert {
    condition     = one(aws_ecs_task_definition.main.volume).efs_volume_configuration[0].authorization_config[0].iam == "ENABLED"
    error_message = "EFS IAM authorization ENABLED"
  }
  assert {
    condition     = one(aws_ecs_task_definition.main.volume).efs_volume_configuration[0].authorization_config[0].access_point_id == aws_efs_access_point.data.id
    error_message = "mounted through the access point"
  }
  assert {
    condition = (
      aws_efs_access_point.data.posix_user[0].uid == 1000 && aws_efs_access_point.data.posix_user[0].gid == 1000 &&
      aws_efs_access_point.data.root_directory[0].path == "/flowstack"
    )
    error_message = "access point: uid/gid 1000 at /flowstack"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.main.container_definitions)[0].mountPoints[0].containerPath == "/var/lib/flowstack"
    error_message = "mounted at the image's data path"
  }
  assert {
    condition     = length(aws_efs_mount_target.data) == 2
    error_message = "a mount target per private subnet"
  }
}

run "rds_postgres" {
  command = plan

  assert {
    condition     = aws_db_instance.main.engine == "postgres" && startswith(aws_db_instance.main.engine_version, "15")
    error_message = "PostgreSQL 15"
  }
  assert {
    condition     = aws_db_instance.main.storage_encrypted == true
    error_message = "storage encrypted"
  }
  assert {
    condition     = aws_db_instance.main.publicly_accessible == false
    error_message = "not publicly accessible"
  }
  assert {
    condition     = aws_db_instance.main.multi_az == var.db_multi_az && aws_db_instance.main.multi_az == true
    error_message = "multi_az follows the variable (default true)"
  }
  assert {
    condition     = aws_db_instance.main.backup_retention_period == var.db_backup_retention_days && aws_db_instance.main.backup_retention_period >= 7
    error_message = "backups: at least 7 days, from the variable"
  }
  assert {
    condition     = aws_db_instance.main.deletion_protection == true && aws_db_instance.main.skip_final_snapshot == false
    error_message = "deletion protection and a final snapshot by default"
  }
  assert {
    condition     = aws_db_instance.main.manage_master_user_password == null
    error_message = "the password is the SSM parameter's, not an RDS-managed (rotating) secret"
  }
  assert {
    condition     = aws_db_subnet_group.main.subnet_ids == toset(var.private_subnet_ids)
    error_message = "the database in the private subnets"
  }
}

run "rds_single_az_when_asked" {
  command = plan

  variables {
    db_multi_az              = false
    db_backup_retention_days = 14
  }

  assert {
    condition     = aws_db_instance.main.multi_az == false
    error_message = "multi_az follows the variable"
  }
  assert {
    condition     = aws_db_instance.main.backup_retention_period == 14
    error_message = "backup retention follows the variable"
  }
}

run "security_group_rules" {
  command = plan

  # Tasks: the only ingress is 3000 from the ALB's group.
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.tasks_from_alb.security_group_id == aws_security_group.tasks.id &&
      aws_vpc_security_group_ingress_rule.tasks_from_alb.from_port == 3000 &&
      aws_vpc_security_group_ingress_rule.tasks_from_alb.to_port == 3000 &&
      aws_vpc_security_group_ingress_rule.tasks_from_alb.ip_protocol == "tcp" &&
      aws_vpc_security_group_ingress_rule.tasks_from_alb.referenced_security_group_id == aws_security_group.alb.id &&
      aws_vpc_security_group_ingress_rule.tasks_from_alb.cidr_ipv4 == null
    )
    error_message = "tasks: ingress 3000 from the ALB's security group only"
  }
  # RDS: 5432 from the task group only (no worker: one rule).
  assert {
    condition = (
      keys(aws_vpc_security_group_ingress_rule.rds_from_tasks) == ["main"] &&
      alltrue([for r in aws_vpc_security_group_ingress_rule.rds_from_tasks :
        r.security_group_id == aws_security_group.rds.id && r.from_port == 5432 && r.to_port == 5432 &&
      r.referenced_security_group_id == aws_security_group.tasks.id && r.cidr_ipv4 == null])
    )
    error_message = "RDS: 5432 from the tasks' group only"
  }
  # EFS: 2049 from the task group only.
  assert {
    condition = (
      keys(aws_vpc_security_group_ingress_rule.efs_from_tasks) == ["main"] &&
      alltrue([for r in aws_vpc_security_group_ingress_rule.efs_from_tasks :
        r.security_group_id == aws_security_group.efs.id && r.from_port == 2049 && r.to_port == 2049 &&
      r.referenced_security_group_id == aws_security_group.tasks.id && r.cidr_ipv4 == null])
    )
    error_message = "EFS: 2049 from the tasks' group only"
  }
  # ALB: 443 and 80 from the given ranges, out only to the tasks on 3000.
  assert {
    condition = (
      alltrue([for r in aws_vpc_security_group_ingress_rule.alb_https : r.from_port == 443 && r.to_port == 443 && r.security_group_id == aws_security_group.alb.id]) &&
      alltrue([for r in aws_vpc_security_group_ingress_rule.alb_http : r.from_port == 80 && r.to_port == 80 && r.security_group_id == aws_security_group.alb.id]) &&
      keys(aws_vpc_security_group_ingress_rule.alb_https) == ["0.0.0.0/0"]
    )
    error_message = "ALB: 443 and 80 from the internet"
  }
  assert {
    condition = (
      aws_vpc_security_group_egress_rule.alb_to_tasks.from_port == 3000 &&
      aws_vpc_security_group_egress_rule.alb_to_tasks.referenced_security_group_id == aws_security_group.tasks.id
    )
    error_message = "ALB: egress only to the tasks on 3000"
  }
  # Tasks' egress to the stores goes to their groups; no Redis without the worker.
  assert {
    condition = (
      toset(keys(aws_vpc_security_group_egress_rule.tasks_to_stores)) == toset(["main-postgres", "main-efs"]) &&
      aws_vpc_security_group_egress_rule.tasks_to_stores["main-postgres"].referenced_security_group_id == aws_security_group.rds.id &&
      aws_vpc_security_group_egress_rule.tasks_to_stores["main-efs"].referenced_security_group_id == aws_security_group.efs.id
    )
    error_message = "tasks: egress to RDS and EFS by group"
  }
  assert {
    condition     = length(aws_security_group.redis) == 0 && length(aws_vpc_security_group_ingress_rule.redis_from_tasks) == 0
    error_message = "no Redis group without the worker"
  }
}

run "alb_and_target_group" {
  command = plan

  assert {
    condition     = aws_lb.main.internal == false && aws_lb.main.load_balancer_type == "application"
    error_message = "an internet-facing ALB"
  }
  assert {
    condition     = aws_lb.main.drop_invalid_header_fields == true
    error_message = "drop_invalid_header_fields"
  }
  assert {
    condition     = aws_lb.main.idle_timeout == 60 && aws_lb.main.idle_timeout < 75
    error_message = "idle_timeout 60, below the router's header_timeout 75"
  }
  assert {
    condition     = aws_lb.main.subnets == toset(var.public_subnet_ids)
    error_message = "the ALB in the public subnets"
  }
  assert {
    condition = (
      aws_lb_listener.https.port == 443 && aws_lb_listener.https.protocol == "HTTPS" &&
      aws_lb_listener.https.certificate_arn == var.certificate_arn &&
      aws_lb_listener.https.default_action[0].type == "forward"
    )
    error_message = "HTTPS listener with the certificate"
  }
  assert {
    condition = (
      aws_lb_listener.http.port == 80 && aws_lb_listener.http.default_action[0].type == "redirect" &&
      aws_lb_listener.http.default_action[0].redirect[0].protocol == "HTTPS" &&
      aws_lb_listener.http.default_action[0].redirect[0].port == "443"
    )
    error_message = "HTTP redirects to HTTPS"
  }
  assert {
    condition = (
      aws_lb_target_group.main.port == 3000 && aws_lb_target_group.main.protocol == "HTTP" &&
      aws_lb_target_group.main.target_type == "ip"
    )
    error_message = "target group: port 3000, target_type ip"
  }
  assert {
    condition     = aws_lb_target_group.main.health_check[0].path == "/api/v1/ping" && aws_lb_target_group.main.health_check[0].matcher == "200"
    error_message = "health check on /api/v1/ping"
  }
  assert {
    condition     = aws_lb_target_group.main.deregistration_delay == "20"
    error_message = "deregistration delay 20 s"
  }
  assert {
    condition     = tonumber(aws_lb_target_group.main.deregistration_delay) + var.router_drain <= var.shutdown_budget
    error_message = "deregistration_delay + router drain must fit in the budget"
  }
}

run "ecs_service" {
  command = plan

  assert {
    condition     = aws_ecs_service.main.launch_type == "FARGATE"
    error_message = "Fargate"
  }
  assert {
    condition = (
      aws_ecs_service.main.network_configuration[0].assign_public_ip == false &&
      aws_ecs_service.main.network_configuration[0].subnets == toset(var.private_subnet_ids) &&
      aws_ecs_service.main.network_configuration[0].security_groups == toset([aws_security_group.tasks.id])
    )
    error_message = "private subnets, no public IP, the tasks' group"
  }
  assert {
    condition     = aws_ecs_service.main.deployment_circuit_breaker[0].enable == true && aws_ecs_service.main.deployment_circuit_breaker[0].rollback == true
    error_message = "circuit breaker with rollback"
  }
  assert {
    condition     = aws_ecs_service.main.enable_execute_command == false
    error_message = "ECS Exec off by default"
  }
  assert {
    condition     = one(aws_ecs_service.main.load_balancer).container_port == 3000 && one(aws_ecs_service.main.load_balancer).target_group_arn == aws_lb_target_group.main.arn
    error_message = "behind the target group on 3000"
  }
  assert {
    condition     = one([for s in aws_ecs_cluster.main.setting : s.value if s.name == "containerInsights"]) == "enabled"
    error_message = "container insights on"
  }
}

run "iam_least_privilege" {
  command = plan

  assert {
    condition = toset(one([
      for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s.Resource if s.Sid == "ReadTheNamedParameters"
      ])) == toset(concat([var.database_password_parameter_arn], values(var.secret_parameter_arns))) && one([
      for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s.Action if s.Sid == "ReadTheNamedParameters"
    ]) == ["ssm:GetParameters"]
    error_message = "the execution role reads exactly the named parameters"
  }
  assert {
    condition     = toset([for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s.Sid]) == toset(["ReadTheNamedParameters", "WriteTheLogGroup"])
    error_message = "without a KMS key or ECR repository: only SSM and logs"
  }
  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s.Resource if s.Sid == "WriteTheLogGroup"
    ]) == ["${aws_cloudwatch_log_group.main.arn}:*"]
    error_message = "logs: only the module's log group"
  }
  assert {
    condition = (
      length(jsondecode(aws_iam_role_policy.task.policy).Statement) == 1 &&
      jsondecode(aws_iam_role_policy.task.policy).Statement[0].Resource == [aws_efs_file_system.data.arn] &&
      jsondecode(aws_iam_role_policy.task.policy).Statement[0].Condition.StringEquals["elasticfilesystem:AccessPointArn"] == aws_efs_access_point.data.arn &&
      toset(jsondecode(aws_iam_role_policy.task.policy).Statement[0].Action) == toset(["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"])
    )
    error_message = "the task role: EFS mount/write on this file system via the access point, nothing else (no ssmmessages without exec)"
  }
  assert {
    condition     = !strcontains(aws_iam_role_policy.task.policy, "ssmmessages")
    error_message = "no ssmmessages without exec"
  }
}

run "iam_with_exec_kms_and_ecr" {
  command = plan

  variables {
    enable_execute_command = true
    secrets_kms_key_arn    = "arn:aws:kms:eu-west-1:123456789012:key/11111111-1111-1111-1111-111111111111"
    ecr_repository_arn     = "arn:aws:ecr:eu-west-1:123456789012:repository/flowstack"
  }

  assert {
    condition     = aws_ecs_service.main.enable_execute_command == true
    error_message = "exec follows the variable"
  }
  assert {
    condition     = strcontains(aws_iam_role_policy.task.policy, "ssmmessages:CreateControlChannel")
    error_message = "ssmmessages on the task role with exec"
  }
  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s if s.Sid == "DecryptTheParametersViaSSM"
      ]).Resource == [var.secrets_kms_key_arn] && one([
      for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s if s.Sid == "DecryptTheParametersViaSSM"
    ]).Condition.StringEquals["kms:ViaService"] == "ssm.eu-west-1.amazonaws.com"
    error_message = "kms:Decrypt on the given key, via SSM only"
  }
  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s.Resource if s.Sid == "PullTheImage"
    ]) == [var.ecr_repository_arn]
    error_message = "ECR pull from the one repository"
  }
}

run "worker_off_by_default" {
  command = plan

  assert {
    condition = (
      length(aws_ecs_task_definition.worker) == 0 && length(aws_ecs_service.worker) == 0 &&
      length(aws_elasticache_replication_group.redis) == 0 && length(aws_ssm_parameter.redis_url) == 0 &&
      length(aws_security_group.worker) == 0 && length(data.aws_ssm_parameter.redis_auth_token) == 0
    )
    error_message = "no worker resources by default"
  }
  assert {
    condition     = output.worker_service_name == null && output.redis_primary_endpoint == null
    error_message = "no worker outputs by default"
  }
}
