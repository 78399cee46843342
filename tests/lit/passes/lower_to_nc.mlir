// RUN: neuron-opt %s --split-input-file -p lower-to-nc | filecheck %s

// A partitioned MatMul + Softmax: one nc.program with one stage; the weight stays in
// HBM until nc-place-weights places it (no reads, no est_time yet) and Softmax is
// decomposed into max, sub, exp, sum, div.
func.func private @neuron_subgraph_0(%x : tensor<2x4xf32>) -> tensor<2x3xf32> attributes {neuron.target = "inf1"} {
  %w = "onnx.Constant"() <{value = dense<1.0> : tensor<4x3xf32>}> : () -> tensor<4x3xf32>
  %m = "onnx.MatMul"(%x, %w) : (tensor<2x4xf32>, tensor<4x3xf32>) -> tensor<2x3xf32>
  %s = "onnx.Softmax"(%m) <{axis = -1 : i64}> : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %s : tensor<2x3xf32>
}
// CHECK-LABEL: func.func private @neuron_subgraph_0
// CHECK-NOT:     onnx.
// CHECK:         %[[P:.*]] = nc.program(%x) attributes {target = "inf1", batch = 1 : i64, cores = 1 : i64} : (tensor<2x4xf32>) -> tensor<2x3xf32> {
// CHECK-NEXT:    ^bb0(%[[X:.*]]: tensor<2x4xf32>):
// CHECK-NEXT:      %[[W:.*]] = nc.weight {value = dense<1.0> : tensor<4x3xf32>, memory = "hbm"}
// CHECK-NEXT:      %[[M:.*]] = nc.matmul %[[X]], %[[W]] : tensor<2x4xf32>, tensor<4x3xf32> -> tensor<2x3xf32>
// CHECK-NEXT:      %[[MAX:.*]] = nc.reduce %[[M]] {op = "max", axes = array<i64: 1>, keepdims = 1 : i64
// CHECK-NEXT:      %[[D:.*]] = nc.tensor_tensor %[[M]], %[[MAX]] {op = "sub"
// CHECK-NEXT:      %[[E:.*]] = nc.activation %[[D]] {func = "exp"
// CHECK-NEXT:      %[[SUM:.*]] = nc.reduce %[[E]] {op = "sum", axes = array<i64: 1>, keepdims = 1 : i64
// CHECK-NEXT:      %[[R:.*]] = nc.tensor_tensor %[[E]], %[[SUM]] {op = "div"
// CHECK-NEXT:      nc.return %[[R]] : tensor<2x3xf32>
// CHECK-NEXT:    }
// CHECK-NEXT:    func.return %[[P]] : tensor<2x3xf32>

// -----

// The scalar constant becomes an immediate; functions without neuron.target are left
// alone.
func.func @main(%x : tensor<1x2048xf32>) -> tensor<1x1024xf32> {
  %c = "onnx.Constant"() <{value = dense<2.0> : tensor<f32>}> : () -> tensor<f32>
  %y = "onnx.Mul"(%x, %c) : (tensor<1x2048xf32>, tensor<f32>) -> tensor<1x2048xf32>
  %r = func.call @neuron_subgraph_1(%y) : (tensor<1x2048xf32>) -> tensor<1x1024xf32>
  func.return %r : tensor<1x1024xf32>
}
func.func private @neuron_subgraph_1(%x : tensor<1x2048xf32>) -> tensor<1x1024xf32> attributes {neuron.target = "inf1"} {
  %c = "onnx.Constant"() <{value = dense<2.0> : tensor<f32>}> : () -> tensor<f32>
  %w = "onnx.Constant"() <{value = dense<0.5> : tensor<2048x1024xf32>}> : () -> tensor<2048x1024xf32>
  %a = "onnx.Mul"(%x, %c) : (tensor<1x2048xf32>, tensor<f32>) -> tensor<1x2048xf32>
  %m = "onnx.MatMul"(%a, %w) : (tensor<1x2048xf32>, tensor<2048x1024xf32>) -> tensor<1x1024xf32>
  func.return %m : tensor<1x1024xf32>
}
// CHECK-LABEL: func.func @main
// CHECK:         "onnx.Mul"
// CHECK-LABEL: func.func private @neuron_subgraph_1
// CHECK:         ^bb0(%[[X:.*]]: tensor<1x2048xf32>):
// CHECK-NEXT:      %[[A:.*]] = nc.tensor_scalar %[[X]] {op = "mul", scalar = 2.000000e+00 : f64}
// CHECK-NEXT:      %[[W:.*]] = nc.weight {value = dense<0.5> : tensor<2048x1024xf32>, memory = "hbm"}
// CHECK-NEXT:      %{{.*}} = nc.matmul %[[A]], %[[W]] :
// CHECK-NOT:     onnx.
// CHECK:         func.return
