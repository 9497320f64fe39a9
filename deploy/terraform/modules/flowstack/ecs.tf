# The ECS cluster, the main task definition and its service.

resource "aws_cloudwatch_log_group" "main" {
  #checkov:skip=CKV_AWS_158:KMS is optional (var.log_kms_key_arn); CloudWatch Logs encrypts at rest by default, and flowinit never logs environment values
  #checkov:skip=CKV_AWS_338:retention is the caller's choice (var.log_retention_days, default 30 days); a year of application logs is not a default every deployment wants
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.tags
}

resource "aws_ecs_cluster" "main" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

resource "aws_ecs_task_definition" "main" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    {
      name      = "flowstack"
      image     = var.image
      essential = true
      portMappings = [
        { name = "http", containerPort = local.port, hostPort = local.port, protocol = "tcp" }
      ]
      # ECS's SIGKILL comes stopTimeout after SIGTERM: 2 s after flowinit's
      # budget (FLOWINIT_SHUTDOWN_TIMEOUT) ends. Both from var.shutdown_budget.
      stopTimeout = local.stop_timeout
      environment = [for k, v in local.main_environment : { name = k, value = v }]
      secrets     = [for k, arn in local.main_secrets : { name = k, valueFrom = arn }]
      mountPoints = [
        { sourceVolume = "data", containerPath = local.data_path, readOnly = false }
      ]
      healthCheck      = local.health_check
      logConfiguration = local.log_configuration
      # flowinit is PID 1 and the init: no second init (ECS's initProcessEnabled).
      linuxParameters = { initProcessEnabled = false }
      # Not read-only: flowinit binds its control socket at /run/flowinit.sock
      # and Flowise and npm write under /tmp and HOME; Fargate has no tmpfs
      # mounts to give those paths (docs/deploy.md "Read-only root filesystems").
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
      condition     = local.stop_timeout > var.shutdown_budget && local.stop_timeout <= 120
      error_message = "stopTimeout (${local.stop_timeout}) must be above the shutdown budget (${var.shutdown_budget}) and at most 120 s (Fargate's maximum)."
    }
    precondition {
      condition     = length(setintersection(toset(keys(local.main_environment)), toset(local.secret_names))) == 0
      error_message = "A secret is in the task's plain environment: ${join(", ", setintersection(toset(keys(local.main_environment)), toset(local.secret_names)))}. Secrets come from SSM (secrets/valueFrom) only."
    }
    precondition {
      condition     = local.start_period >= var.flowise_start_timeout
      error_message = "The health check's startPeriod (${local.start_period}) must cover Flowise's start_timeout (${var.flowise_start_timeout})."
    }
  }
}

resource "aws_ecs_service" "main" {
  name                   = var.name
  cluster                = aws_ecs_cluster.main.id
  task_definition        = aws_ecs_task_definition.main.arn
  desired_count          = var.desired_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = var.enable_execute_command
  propagate_tags         = "SERVICE"

  # The ALB's failing checks do not count while Flowise boots (first boot:
  # migrations): the same number as the container's startPeriod.
  health_check_grace_period_seconds = local.start_period

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.main.arn
    container_name   = "flowstack"
    container_port   = local.port
  }

  tags = local.tags

  # The target group must be attached to a listener before a service uses it;
  # and the tasks must be able to mount EFS when they start.
  depends_on = [aws_lb_listener.https, aws_efs_mount_target.data, aws_iam_role_policy.execution]
}
