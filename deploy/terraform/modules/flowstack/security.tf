# Security groups: internet -> ALB (443, 80) -> tasks (3000) -> RDS (5432),
# EFS (2049), Redis (6379). No other ingress anywhere. Terraform removes the
# default allow-all egress rule of each group; egress is listed below.

resource "aws_security_group" "alb" {
  name_prefix = "${var.name}-alb-"
  description = "FlowStack ALB: HTTPS and HTTP (redirect) from the internet"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  #checkov:skip=CKV_AWS_260:not port 80 (checkov matches the group); this is 443 of the public ALB
  for_each          = toset(var.alb_ingress_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from clients"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  #checkov:skip=CKV_AWS_260:port 80 of the public ALB only answers 301 to https
  for_each          = toset(var.alb_ingress_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTP from clients (redirected to HTTPS)"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the tasks' router"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.tasks.id
}

# ---- tasks ----------------------------------------------------------------------

resource "aws_security_group" "tasks" {
  name_prefix = "${var.name}-tasks-"
  description = "FlowStack main tasks: port 3000 from the ALB only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-tasks" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "The router, from the ALB only"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.alb.id
}

# The worker: no ingress at all.
resource "aws_security_group" "worker" {
  count       = var.enable_worker ? 1 : 0
  name_prefix = "${var.name}-worker-"
  description = "FlowStack queue workers: no ingress"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-worker" })

  lifecycle {
    create_before_destroy = true
  }
}

locals {
  # The groups of the tasks of this module, by role: main, and the worker
  # when queue mode is on. (Keys known at plan time; ids are not.)
  task_sgs = merge(
    { main = aws_security_group.tasks.id },
    var.enable_worker ? { worker = aws_security_group.worker[0].id } : {},
  )

  # Egress of the tasks to the data stores, by group.
  task_egress = merge([
    for role, sg in local.task_sgs : merge(
      {
        "${role}-postgres" = { sg = sg, port = 5432, to = aws_security_group.rds.id }
        "${role}-efs"      = { sg = sg, port = 2049, to = aws_security_group.efs.id }
      },
      var.enable_worker ? { "${role}-redis" = { sg = sg, port = 6379, to = aws_security_group.redis[0].id } } : {},
    )
  ]...)
}

# HTTPS anywhere: ECR, SSM, CloudWatch Logs, and the LLM and tool APIs the
# flows call (which are not known in advance).
resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  for_each          = local.task_sgs
  security_group_id = each.value
  description       = "HTTPS: AWS APIs (ECR, SSM, logs) and the APIs the flows call"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_stores" {
  for_each                     = local.task_egress
  security_group_id            = each.value.sg
  description                  = "To ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = each.value.to
}

# ---- data stores: ingress from the task groups only, no egress --------------------

resource "aws_security_group" "rds" {
  name_prefix = "${var.name}-rds-"
  description = "FlowStack PostgreSQL: 5432 from the tasks only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-rds" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_tasks" {
  for_each                     = local.task_sgs
  security_group_id            = aws_security_group.rds.id
  description                  = "PostgreSQL from the ${each.key} tasks"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
}

resource "aws_security_group" "efs" {
  name_prefix = "${var.name}-efs-"
  description = "FlowStack EFS: NFS from the tasks only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-efs" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "efs_from_tasks" {
  for_each                     = local.task_sgs
  security_group_id            = aws_security_group.efs.id
  description                  = "NFS from the ${each.key} tasks"
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  referenced_security_group_id = each.value
}

resource "aws_security_group" "redis" {
  count       = var.enable_worker ? 1 : 0
  name_prefix = "${var.name}-redis-"
  description = "FlowStack Redis (queue mode): 6379 from the tasks only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-redis" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_tasks" {
  for_each                     = var.enable_worker ? local.task_sgs : {}
  security_group_id            = aws_security_group.redis[0].id
  description                  = "Redis from the ${each.key} tasks"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = each.value
}
