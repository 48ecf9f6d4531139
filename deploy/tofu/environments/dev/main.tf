# dev: 256 CPU units and 512 MiB per task, 1 task(s), RDS db.t3.micro (Multi-AZ false),
# Redis cache.t3.micro x 1, logs kept 30 days, deletion protection false.
# The values of deploy/README.md's environment table are the literal arguments below (a test compares them).
locals {
  name = "workflow-dev"
}

module "vpc" {
  source   = "../../modules/vpc"
  name     = local.name
  az_count = 2
}

module "ecr" {
  source       = "../../modules/ecr"
  name         = local.name
  force_delete = true
}

module "alb" {
  source                       = "../../modules/alb"
  name                         = local.name
  vpc_id                       = module.vpc.vpc_id
  vpc_cidr_block               = module.vpc.vpc_cidr_block
  public_subnet_ids            = module.vpc.public_subnet_ids
  certificate_arn              = var.certificate_arn
  deregistration_delay_seconds = var.shutdown_timeout_seconds
  deletion_protection          = false
}

module "monitoring" {
  source                  = "../../modules/monitoring"
  name                    = local.name
  region                  = var.region
  log_retention_days      = 30
  alarm_email             = var.alarm_email
  ecs_cluster_name        = module.ecs.cluster_name
  ecs_service_name        = module.ecs.service_name
  alb_arn_suffix          = module.alb.arn_suffix
  target_group_arn_suffix = module.alb.target_group_arn_suffix
}

module "rds" {
  source                     = "../../modules/rds"
  name                       = local.name
  vpc_id                     = module.vpc.vpc_id
  private_subnet_ids         = module.vpc.private_subnet_ids
  allowed_security_group_ids = [module.ecs.task_security_group_id]
  instance_class             = "db.t3.micro"
  multi_az                   = false
  deletion_protection        = false
}

module "elasticache" {
  source                     = "../../modules/elasticache"
  name                       = local.name
  vpc_id                     = module.vpc.vpc_id
  private_subnet_ids         = module.vpc.private_subnet_ids
  allowed_security_group_ids = [module.ecs.task_security_group_id]
  node_type                  = "cache.t3.micro"
  num_cache_nodes            = 1
  automatic_failover         = false
}

module "ecs" {
  source                   = "../../modules/ecs"
  name                     = local.name
  vpc_id                   = module.vpc.vpc_id
  private_subnet_ids       = module.vpc.private_subnet_ids
  alb_security_group_id    = module.alb.security_group_id
  target_group_arn         = module.alb.target_group_arn
  image_repository         = module.ecr.repository_url
  image_tag                = var.image_tag
  cpu                      = 256
  memory                   = 512
  desired_count            = 1
  autoscaling_enabled      = false
  min_capacity             = 1
  max_capacity             = 1
  log_group_name           = module.monitoring.log_group_name
  shutdown_timeout_seconds = var.shutdown_timeout_seconds
  environment = {
    WORKFLOW_DB_HOST    = "${module.rds.address}:${module.rds.port}"
    WORKFLOW_DB_NAME    = module.rds.db_name
    WORKFLOW_DB_USER    = module.rds.username
    WORKFLOW_REDIS_ADDR = module.elasticache.url
  }
  secrets = {
    WORKFLOW_DB_PASSWORD = "${module.rds.master_user_secret_arn}:password::"
    JWT_SECRET           = var.jwt_secret_arn
  }
  secret_arns = [module.rds.master_user_secret_arn, var.jwt_secret_arn]
}
