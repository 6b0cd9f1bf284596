"""ABP: detect GPUs used for cryptocurrency mining from ``nvidia-smi`` metric records."""

MODEL_NAME = "abp-nvsmi-xgb"
EXPERIMENT_NAME = "abp-nvsmi"
PROD_ALIAS = "production"
