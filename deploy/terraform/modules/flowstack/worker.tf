# Queue mode (var.enable_worker, off by default; docs/scaling.md): an
# ElastiCache Redis (cluster mode off, TLS, AUTH token, noeviction), the
# worker service (same image, FLOWINIT_PROFILES=worker, no port, no load
# balancer) and REDIS_URL for both, as a SecureString this module writes.

data "aws_ssm_parameter" "redis_auth_token" {
  count           = var.enable_worker ? 1 : 0
  name            = var.redis_auth_token_parameter_arn
  with_decryption = true
}

resource "aws_elasticache_subnet_group" "redis" {
  count      = var.enable_worker ? 1 : 0
  name       = "${var.name}-redis"
  subnet_ids = var.private_subnet_ids
  tags       = local.tags
}

# BullMQ requires noeviction: an evicted key is a lost job.
resource "aws_elasticache_parameter_group" "redis" {
  count  = var.enable_worker ? 1 : 0
  name   = "${var.name}-redis7"
  family = "redis7"

  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }

  tags = local.tags
}

resource "aws_elasticache_replication_group" "redis" {
  #checkov:skip=CKV2_AWS_50:failover and Multi-AZ are on by default (var.redis_num_cache_clusters = 2 > 1); checkov cannot evaluate the expression
  count                = var.enable_worker ? 1 : 0
  replication_group_id = "${var.name}-redis"
  description          = "FlowStack queue mode (BullMQ)"
  engine               = "redis"
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = aws_elasticache_parameter_group.redis[0].name
  subnet_group_name    = aws_elasticache_subnet_group.redis[0].name
  security_group_ids   = [aws_security_group.redis[0].id]

  # Cluster mode off: BullMQ's scripts touch several keys of one queue.
  num_cache_clusters         = var.redis_num_cache_clusters
  automatic_failover_enabled = var.redis_num_cache_clusters > 1
  multi_az_enabled           = var.redis_num_cache_clusters > 1

  transit_encryption_enabled = true
  at_rest_encryption_enabled = true
  kms_key_id                 = var.redis_kms_key_arn
  auth_token                 = data.aws_ssm_parameter.redis_auth_token[0].value

  snapshot_retention_limit   = 1
  auto_minor_version_upgrade = true

  tags = local.tags
}

# rediss:// (TLS) with the token: a secret, so a SecureString, given to the
# tasks through secrets/valueFrom like the others.
resource "aws_ssm_parameter" "redis_url" {
  count       = var.enable_worker ? 1 : 0
  name        = "/${var.name}/redis-url"
  description = "FlowStack REDIS_URL (queue mode), written by Terraform"
  type        = "SecureString"
  key_id      = var.secrets_kms_key_arn
  value       = "rediss://:${urlencode(data.aws_ssm_parameter.redis_auth_token[0].value)}@${aws_elasticache_replication_group.redis[0].primary_endpoint_address}:6379"
  tags        = local.tags
}

resource "aws_ecs_task_definition" "worker" {
  count                    = var.enable_worker ? 1 : 0
  family                   = "${var.name}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.worker_cpu)
  memory                   = tostring(var.worker_memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    {
      name        = "worker"
      image       = var.image
      essential   = true
      stopTimeout = local.stop_timeout
      environment = [for k, v in local.worker_environment : { name = k, value = v }]
      secrets     = [for k, arn in local.worker_secrets : { name = k, valueFrom = arn }]
      # The same volume as main: with STORAGE_TYPE=local, files uploaded
      # through a main replica are there for the worker that runs the job.
      mountPoints = [
        { sourceVolume = "data", containerPath = local.data_path, readOnly = false }
      ]
      healthCheck            = local.health_check
      logConfiguration       = merge(local.log_configuration, { options = merge(local.log_configuration.options, { "awslogs-stream-prefix" = "worker" }) })
      linuxParameters        = { initProcessEnabled = false }
      readonlyRootFilesystem = false
    }
  ])

  volume {
    name = "data"
    efs_volume_configuration {
      file_system_id     = aws_efs_file_system.data.id
      transit_encryption = "ENABLED"
      authorization_config {
        access_point_id = aws_efs_access_point.data.id
        iam             = "ENABLED"
      }
    }
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = length(setintersection(toset(keys(local.worker_environment)), toset(local.secret_names))) == 0
      error_message = "A secret is in the worker's plain environment: secrets come from SSM (secrets/valueFrom) only."
    }
  }
}

resource "aws_ecs_service" "worker" {
  count                  = var.enable_worker ? 1 : 0
  name                   = "${var.name}-worker"
  cluster                = aws_ecs_cluster.main.id
  task_definition        = aws_ecs_task_definition.worker[0].arn
  desired_count          = var.worker_desired_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = var.enable_execute_command
  propagate_tags         = "SERVICE"

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.worker[0].id]
    assign_public_ip = false
  }

  tags = local.tags

  depends_on = [aws_efs_mount_target.data, aws_iam_role_policy.execution]
}
