# The internet-facing ALB: HTTPS to the tasks' port 3000, HTTP redirected.

resource "aws_lb" "main" {
  #checkov:skip=CKV2_AWS_76:no web ACL is created here (var.waf_web_acl_arn is optional), so its managed rules (Log4j AMR) are the caller's
  #checkov:skip=CKV_AWS_91:access logs are optional (var.alb_access_logs_bucket): the bucket and its ELB-account policy belong to the caller
  #checkov:skip=CKV2_AWS_28:a WAF web ACL is optional (var.waf_web_acl_arn); its rules are the caller's
  name                       = var.name
  internal                   = false
  load_balancer_type         = "application"
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
  # Below the router's header_timeout: the ALB closes idle connections first.
  idle_timeout = var.alb_idle_timeout

  dynamic "access_logs" {
    for_each = var.alb_access_logs_bucket == null ? [] : [var.alb_access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = var.alb_access_logs_prefix
      enabled = true
    }
  }

  tags = local.tags
}

resource "aws_wafv2_web_acl_association" "main" {
  count        = var.waf_web_acl_arn == null ? 0 : 1
  resource_arn = aws_lb.main.arn
  web_acl_arn  = var.waf_web_acl_arn
}

resource "aws_lb_target_group" "main" {
  #checkov:skip=CKV_AWS_378:TLS ends at the ALB; the router on :3000 speaks HTTP, and the tasks' security group admits only the ALB
  name        = "${var.name}-tg"
  vpc_id      = var.vpc_id
  port        = local.port
  protocol    = "HTTP"
  target_type = "ip"

  # ECS deregisters a task and waits this long (the ALB sends it no new
  # requests and lets those in flight finish) before it sends SIGTERM; then
  # the router drains for router_drain seconds inside flowinit's budget.
  # deregistration_delay + router_drain <= shutdown_budget (20 + 5 <= 28).
  deregistration_delay = var.deregistration_delay

  health_check {
    path                = "/api/v1/ping"
    protocol            = "HTTP"
    port                = "traffic-port"
    matcher             = "200"
    interval            = local.health_check.interval
    timeout             = local.health_check.timeout
    healthy_threshold   = 2
    unhealthy_threshold = local.health_check.retries
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.deregistration_delay + var.router_drain <= var.shutdown_budget
      error_message = "deregistration_delay (${var.deregistration_delay} s) + router_drain (${var.router_drain} s) must not exceed shutdown_budget (${var.shutdown_budget} s): ECS waits the deregistration delay before SIGTERM, but a task that stops on its own (flowinit exits, StopTask, a Spot interruption) is deregistered and signalled together, and the ALB's draining plus the router's drain must then end before ECS's SIGKILL at stopTimeout."
    }
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.main.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.main.arn
  }

  tags = local.tags
}

resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:this listener only answers 301 to https (the default action is a redirect, nothing is forwarded)
  #checkov:skip=CKV_AWS_103:plain HTTP that only redirects to the HTTPS listener, which has the TLS policy
  load_balancer_arn = aws_lb.main.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }

  tags = local.tags
}
