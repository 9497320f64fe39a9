# Least privilege. The execution role (used by ECS to start a task) reads
# exactly the named SSM parameters, pulls from the one ECR repository and
# writes to the one log group. The task role (the processes in the
# container) may mount and write the one file system through its access
# point, plus the ssmmessages channels when ECS Exec is on. Both roles serve
# the main and the worker task definitions.

locals {
  ecs_tasks_trust = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })

  execution_statements = concat(
    [
      {
        Sid      = "ReadTheNamedParameters"
        Effect   = "Allow"
        Action   = ["ssm:GetParameters"]
        Resource = local.secret_arns
      },
      {
        Sid      = "WriteTheLogGroup"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = ["${aws_cloudwatch_log_group.main.arn}:*"]
      },
    ],
    var.secrets_kms_key_arn == null ? [] : [
      {
        Sid      = "DecryptTheParametersViaSSM"
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.secrets_kms_key_arn]
        Condition = {
          StringEquals = { "kms:ViaService" = "ssm.${data.aws_region.current.name}.amazonaws.com" }
        }
      },
    ],
    var.ecr_repository_arn == null ? [] : [
      {
        # GetAuthorizationToken has no resource-level permissions.
        Sid      = "EcrLogin"
        Effect   = "Allow"
        Action   = ["ecr:GetAuthorizationToken"]
        Resource = ["*"]
      },
      {
        Sid      = "PullTheImage"
        Effect   = "Allow"
        Action   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
        Resource = [var.ecr_repository_arn]
      },
    ],
  )

  task_statements = concat(
    [
      {
        Sid      = "MountTheDataVolume"
        Effect   = "Allow"
        Action   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
        Resource = [aws_efs_file_system.data.arn]
        Condition = {
          StringEquals = { "elasticfilesystem:AccessPointArn" = aws_efs_access_point.data.arn }
        }
      },
    ],
    var.enable_execute_command ? [
      {
        # ECS Exec's channels; these actions have no resource-level permissions.
        Sid    = "EcsExec"
        Effect = "Allow"
        Action = [
          "ssmmessages:CreateControlChannel",
          "ssmmessages:CreateDataChannel",
          "ssmmessages:OpenControlChannel",
          "ssmmessages:OpenDataChannel",
        ]
        Resource = ["*"]
      },
    ] : [],
  )
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-exec-"
  description        = "FlowStack: ECS pulls the image, reads the SSM secrets, writes the log group"
  assume_role_policy = local.ecs_tasks_trust
  tags               = local.tags
}

resource "aws_iam_role_policy" "execution" {
  #checkov:skip=CKV_AWS_355:the only "*" is ecr:GetAuthorizationToken (present only with ecr_repository_arn), which has no resource-level permissions
  name   = "flowstack-execution"
  role   = aws_iam_role.execution.id
  policy = jsonencode({ Version = "2012-10-17", Statement = local.execution_statements })
}

resource "aws_iam_role" "task" {
  name_prefix        = "${var.name}-task-"
  description        = "FlowStack containers: the EFS data volume, ECS Exec when enabled"
  assume_role_policy = local.ecs_tasks_trust
  tags               = local.tags
}

resource "aws_iam_role_policy" "task" {
  #checkov:skip=CKV_AWS_290:the only "*" is ssmmessages (present only with enable_execute_command), which has no resource-level permissions
  #checkov:skip=CKV_AWS_355:the only "*" is ssmmessages (present only with enable_execute_command), which has no resource-level permissions
  name   = "flowstack-task"
  role   = aws_iam_role.task.id
  policy = jsonencode({ Version = "2012-10-17", Statement = local.task_statements })
}
