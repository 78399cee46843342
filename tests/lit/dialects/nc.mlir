// The nc dialect: each op prints in its assembly format, and print -> parse -> print
// is stable; verifier errors name the op.
// RUN: neuron-opt %s | filecheck %s
// RUN: neuron-opt %s -o %t.a.mlir && neuron-opt %t.a.mlir -o %t.b.mlir && diff %t.a.mlir %t.b.mlir

func.func private @neuron_subgraph_0(%x: tensor<2x4xf32>) -> tensor<2x3xf32> attributes {neuron.target = "inf1"} {
  %y = "nc.program"(%x) <{target = "inf1", batch = 2 : i64, cores = 2 : i64}> ({
  ^bb0(%in: tensor<2x4xf32>):
    %w = nc.weight {value = dense<1.0> : tensor<4x3xf32>, memory = "sbuf"} : tensor<4x3xf32>
    %m = nc.matmul %in, %w {reads = ["sbuf", "sbuf"], est_time = 1.0e-06 : f64} : tensor<2x4xf32>, tensor<4x3xf32> -> tensor<2x3xf32>
    %a = nc.activation %m {func = "gelu"} : tensor<2x3xf32> -> tensor<2x3xf32>
    nc.send %a {to_stage = 1 : i64, channel = 0 : i64} : tensor<2x3xf32>
    nc.return
  }, {
  ^bb0(%in2: tensor<2x4xf32>):
    %r = nc.recv {from_stage = 0 : i64, channel = 0 : i64} : tensor<2x3xf32>
    %s = nc.reduce %r {op = "max", axes = array<i64: 1>, keepdims = 1 : i64} : tensor<2x3xf32> -> tensor<2x1xf32>
    %d = nc.tensor_tensor %r, %s {op = "sub"} : tensor<2x3xf32>, tensor<2x1xf32> -> tensor<2x3xf32>
    %e = nc.activation %d {func = "exp", scale = 1.0 : f64} : tensor<2x3xf32> -> tensor<2x3xf32>
    nc.return %e : tensor<2x3xf32>
  }) : (tensor<2x4xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK:      %y = nc.program(%x) attributes {target = "inf1", batch = 2 : i64, cores = 2 : i64} : (tensor<2x4xf32>) -> tensor<2x3xf32> {
// CHECK:        %w = nc.weight {value = dense<1.0> : tensor<4x3xf32>, memory = "sbuf"} : tensor<4x3xf32>
// CHECK-NEXT:   %m = nc.matmul %in, %w {reads = ["sbuf", "sbuf"], est_time = 1.000000e-06 : f64} : tensor<2x4xf32>, tensor<4x3xf32> -> tensor<2x3xf32>
// CHECK-NEXT:   %a = nc.activation %m {func = "gelu"} : tensor<2x3xf32> -> tensor<2x3xf32>
// CHECK-NEXT:   nc.send %a {to_stage = 1 : i64, channel = 0 : i64} : tensor<2x3xf32>
// CHECK-NEXT:   nc.return
// CHECK:        %r = nc.recv {from_stage = 0 : i64, channel = 0 : i64} : tensor<2x3xf32>
// CHECK:        nc.return %e : tensor<2x3xf32>
