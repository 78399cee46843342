// RUN: neuron-opt %s -p nc-place-weights | filecheck %s
// RUN: neuron-opt %s -p 'nc-place-weights{autocast=false}' | filecheck %s --check-prefix=FP32

// inf1's SBUF weight budget is 6 MiB (6291456 bytes). Under autocast the two matmul
// weights are stored as bf16: 4 MiB + 2 MiB fill the budget exactly, so the 4 KiB
// bias (read by the Vector engine, kept in fp32) no longer fits and stays in HBM.
// The table read only by a gather stays in HBM whatever the room.
func.func private @neuron_subgraph_0(%x : tensor<1x2048xf32>, %ids : tensor<1x4xi64>) -> (tensor<1x1024xf32>, tensor<1x4x8xf32>) attributes {neuron.target = "inf1"} {
  %r:2 = nc.program(%x, %ids) attributes {target = "inf1", batch = 1 : i64, cores = 1 : i64} : (tensor<1x2048xf32>, tensor<1x4xi64>) -> (tensor<1x1024xf32>, tensor<1x4x8xf32>) {
  ^bb0(%a: tensor<1x2048xf32>, %i: tensor<1x4xi64>):
    %table = nc.weight {value = dense<1.0> : tensor<1000x8xf32>, memory = "hbm"} : tensor<1000x8xf32>
    %e = nc.gather %table, %i {axis = 0 : i64, mode = "take"} : tensor<1000x8xf32>, tensor<1x4xi64> -> tensor<1x4x8xf32>
    %w0 = nc.weight {value = dense<0.5> : tensor<2048x1024xf32>, memory = "hbm"} : tensor<2048x1024xf32>
    %m0 = nc.matmul %a, %w0 : tensor<1x2048xf32>, tensor<2048x1024xf32> -> tensor<1x1024xf32>
    %w1 = nc.weight {value = dense<0.25> : tensor<1024x1024xf32>, memory = "hbm"} : tensor<1024x1024xf32>
    %m1 = nc.matmul %m0, %w1 : tensor<1x1024xf32>, tensor<1024x1024xf32> -> tensor<1x1024xf32>
    %b = nc.weight {value = dense<1.0> : tensor<1x1024xf32>, memory = "hbm"} : tensor<1x1024xf32>
    %y = nc.tensor_tensor %m1, %b {op = "add"} : tensor<1x1024xf32>, tensor<1x1024xf32> -> tensor<1x1024xf32>
    nc.return %y, %e : tensor<1x1024xf32>, tensor<1x4x8xf32>
  }
  func.return %r#0, %r#1 : tensor<1x1024xf32>, tensor<1x4x8xf32>
}
// CHECK:      %table = nc.weight {{.*}} memory = "hbm"}
// CHECK-NEXT: %e = nc.gather %table, %i {axis = 0 : i64, mode = "take", reads = ["hbm", "sbuf"]}
// CHECK-NEXT: %w0 = nc.weight {{.*}} memory = "sbuf"}
// CHECK-NEXT: %m0 = nc.matmul %a, %w0 {reads = ["sbuf", "sbuf"]}
// CHECK-NEXT: %w1 = nc.weight {{.*}} memory = "sbuf"}
// CHECK-NEXT: %m1 = nc.matmul %m0, %w1 {reads = ["sbuf", "sbuf"]}
// CHECK-NEXT: %b = nc.weight {{.*}} memory = "hbm"}
// CHECK-NEXT: %y = nc.tensor_tensor %m1, %b {op = "add", reads = ["sbuf", "hbm"]}

// Without autocast the 8 MiB fp32 weight cannot fit; first fit still caches the
// 4 MiB one and the bias after it.
// FP32:      %w0 = nc.weight {{.*}} memory = "hbm"}
// FP32-NEXT: %m0 = nc.matmul %a, %w0 {reads = ["sbuf", "hbm"]}
// FP32-NEXT: %w1 = nc.weight {{.*}} memory = "sbuf"}
// FP32:      %b = nc.weight {{.*}} memory = "sbuf"}
