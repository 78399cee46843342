// RUN: neuron-opt %s -p 'nc-place-weights{autocast=false},nc-estimate{autocast=false}' | filecheck %s

// Prices on inf1 (2 us dispatch, 50 GiB/s DRAM shared by 4 cores = 12.5 GiB/s a core):
// - the gather pays for the 128 bytes of rows it reads, not the 32 KB table:
//   2 us + 128 B / 12.5 GiB/s = 2.0095 us;
// - the matmul streaming its 8 MiB fp32 weight from HBM: 2 us + 625 us = 627 us
//   (its 4.2 MFLOP take 0.26 us at 16 TFLOPS, hidden under the transfer);
// - the matmul with its weight in SBUF: 2 us + 2.1 MFLOP / 16 TFLOPS = 2.131 us.
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
// CHECK: nc.gather %table, %i {{.*}} est_time = 2.0095367431640{{[0-9]*}}e-06 : f64}
// CHECK: nc.matmul %a, %w0 {reads = ["sbuf", "hbm"], est_time = 0.000627000000{{[0-9]*}} : f64}
// CHECK: nc.matmul %m0, %w1 {reads = ["sbuf", "sbuf"], est_time = 2.13107{{[0-9]*}}e-06 : f64}
// CHECK: nc.tensor_tensor %m1, %b {op = "add", reads = ["sbuf", "sbuf"], est_time = {{.*}}}
