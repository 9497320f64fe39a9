output "alb_dns_name" {
  description = "DNS name of the ALB: point your domain's record (alias) at it."
  value       = aws_lb.main.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the ALB, for a Route 53 alias record."
  value       = aws_lb.main.zone_id
}

output "cluster_name" {
  description = "The ECS cluster."
  value       = aws_ecs_cluster.main.name
}

output "service_name" {
  description = "The main ECS service."
  value       = aws_ecs_service.main.name
}

output "worker_service_name" {
  description = "The worker ECS service (null unless enable_worker)."
  value       = var.enable_worker ? aws_ecs_service.worker[0].name : null
}

output "task_role_arn" {
  description = "The task role: attach more policies (an S3 bucket for STORAGE_TYPE=s3) here."
  value       = aws_iam_role.task.arn
}

output "execution_role_arn" {
  description = "The execution role."
  value       = aws_iam_role.execution.arn
}

output "database_endpoint" {
  description = "host:port of the RDS instance."
  value       = aws_db_instance.main.endpoint
}

output "efs_file_system_id" {
  description = "The data volume's file system."
  value       = aws_efs_file_system.data.id
}

output "log_group_name" {
  description = "CloudWatch log group of both services (JSON lines)."
  value       = aws_cloudwatch_log_group.main.name
}

output "redis_primary_endpoint" {
  description = "The Redis primary endpoint (null unless enable_worker)."
  value       = var.enable_worker ? aws_elasticache_replication_group.redis[0].primary_endpoint_address : null
}

output "shutdown" {
  description = "The derived shutdown and health numbers (docs/deploy.md \"The numbers\")."
  value = {
    flowinit_shutdown_timeout = "${var.shutdown_budget}s"
    stop_timeout              = local.stop_timeout
    deregistration_delay      = var.deregistration_delay
    router_drain              = var.router_drain
    health_check_start_period = local.start_period
    alb_idle_timeout          = var.alb_idle_timeout
    router_header_timeout     = local.router_header_timeout
  }
}
