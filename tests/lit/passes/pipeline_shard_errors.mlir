// RUN: not neuron-opt %s -p 'pipeline-shard{cores=65}' 2>&1 | filecheck %s --check-prefix=LIMIT
// RUN: not neuron-opt %s -p 'pipeline-shard{cores=auto}' 2>&1 | filecheck %s --check-prefix=BIG
// RUN: neuron-opt %s -p 'pipeline-shard{cores=auto allow_hbm_weights=true}' | filecheck %s --check-prefix=HBM
// RUN: not neuron-opt %s -p 'pipeline-shard{cores=9}' 2>&1 | filecheck %s --check-prefix=FEW

// LIMIT: error: {{.*}}pipeline-shard: cores=65 but inf1 has at most 64 NeuronCores
// BIG: error: {{.*}}pipeline-shard: op #1 'nc.matmul' (tensor<1x4096xf32>, tensor<4096x1024xf32>) reads 8388608 bytes (8.39 MB) of weights but one inf1 core's SBUF weight budget is 6291456 bytes (6.29 MB); pass allow_hbm_weights=true to stream it from HBM
// FEW: error: {{.*}}pipeline-shard: cannot cut 3 op(s) into 9 stages

// With allow_hbm_weights the 8 MiB (bf16) matmul gets a stage of its own and streams.
// HBM:      cores = 3 : i64
// HBM:      %w = nc.weight {{.*}} memory = "hbm"}
// HBM-NEXT: nc.matmul %{{.*}}, %w {reads = ["sbuf", "hbm"]

func.func private @neuron_subgraph_0(%x : tensor<1x4096xf32>) -> tensor<1x1024xf32> attributes {neuron.target = "inf1"} {
  %r = nc.program(%x) attributes {target = "inf1", batch = 1 : i64, cores = 1 : i64} : (tensor<1x4096xf32>) -> tensor<1x1024xf32> {
  ^bb0(%a: tensor<1x4096xf32>):
    %t = nc.activation %a {func = "tanh"} : tensor<1x4096xf32> -> tensor<1x4096xf32>
    %w = nc.weight {value = dense<0.5> : tensor<4096x1024xf32>, memory = "hbm"} : tensor<4096x1024xf32>
    %m = nc.matmul %t, %w : tensor<1x4096xf32>, tensor<4096x1024xf32> -> tensor<1x1024xf32>
    %y = nc.activation %m {func = "tanh"} : tensor<1x1024xf32> -> tensor<1x1024xf32>
    nc.return %y : tensor<1x1024xf32>
  }
  func.return %r : tensor<1x1024xf32>
}
