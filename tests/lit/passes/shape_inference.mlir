// RUN: neuron-opt %s --split-input-file -p 'shape-inference{dims="batch:2"}' | filecheck %s

// Exporter-style shape arithmetic folds to a constant and the Reshape turns static;
// the dead Shape/Gather/Concat chain is removed.
func.func @main(%x: tensor<?x4x8xf32> {onnx.name = "x", onnx.dim_params = ["batch", "", ""]}) -> tensor<*xf32> {
  %s = "onnx.Shape"(%x) : (tensor<?x4x8xf32>) -> tensor<3xi64>
  %i = "onnx.Constant"() <{value = dense<[0]> : tensor<1xi64>}> : () -> tensor<1xi64>
  %b = "onnx.Gather"(%s, %i) <{axis = 0 : i64}> : (tensor<3xi64>, tensor<1xi64>) -> tensor<1xi64>
  %m = "onnx.Constant"() <{value = dense<[-1]> : tensor<1xi64>}> : () -> tensor<1xi64>
  %t = "onnx.Concat"(%b, %m) <{axis = 0 : i64}> : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64>
  %y = "onnx.Reshape"(%x, %t) : (tensor<?x4x8xf32>, tensor<2xi64>) -> tensor<*xf32>
  func.return %y : tensor<*xf32>
}
// CHECK-LABEL: func.func @main(%x: tensor<2x4x8xf32>
// CHECK-SAME:  -> tensor<2x32xf32>
// CHECK-NOT:   onnx.Shape
// CHECK-NOT:   onnx.Gather
// CHECK:       %[[T:.*]] = "onnx.Constant"() <{value = dense<[2, -1]> : tensor<2xi64>}>
// CHECK:       %y = "onnx.Reshape"(%x, %[[T]]) : (tensor<2x4x8xf32>, tensor<2xi64>) -> tensor<2x32xf32>

// -----

// Broadcasting, MatMul and Conv get their output shapes from the rules.
func.func @main(%x: tensor<?x3x8x8xf32> {onnx.name = "x", onnx.dim_params = ["batch", "", "", ""]}, %w: tensor<4x3x3x3xf32> {onnx.name = "w"}, %v: tensor<8x5xf32> {onnx.name = "v"}) -> (tensor<*xf32>, tensor<*xf32>) {
  %c = "onnx.Conv"(%x, %w) <{strides = array<i64: 2, 2>, pads = array<i64: 1, 1, 1, 1>}> : (tensor<?x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<*xf32>
  %b = "onnx.Constant"() <{value = dense<1.0> : tensor<4x1x1xf32>}> : () -> tensor<4x1x1xf32>
  %a = "onnx.Add"(%c, %b) : (tensor<*xf32>, tensor<4x1x1xf32>) -> tensor<*xf32>
  %m = "onnx.MatMul"(%x, %v) : (tensor<?x3x8x8xf32>, tensor<8x5xf32>) -> tensor<*xf32>
  func.return %a, %m : tensor<*xf32>, tensor<*xf32>
}
// CHECK-LABEL: func.func @main
// CHECK:       "onnx.Conv"{{.*}} -> tensor<2x4x4x4xf32>
// CHECK:       "onnx.Add"{{.*}} -> tensor<2x4x4x4xf32>
// CHECK:       "onnx.MatMul"{{.*}} -> tensor<2x3x8x5xf32>

// -----

// Data-dependent results stay dynamic and are marked; everything else is static.
func.func @main(%x: tensor<?x3xf32> {onnx.name = "x", onnx.dim_params = ["batch", ""]}) -> tensor<*xi64> {
  %n = "onnx.NonZero"(%x) : (tensor<?x3xf32>) -> tensor<*xi64>
  %t = "onnx.Transpose"(%n) : (tensor<*xi64>) -> tensor<*xi64>
  func.return %t : tensor<*xi64>
}
// CHECK-LABEL: func.func @main
// CHECK:       %n = "onnx.NonZero"(%x) {onnx.data_dependent} : (tensor<2x3xf32>) -> tensor<2x?xi64>
// CHECK:       %t = "onnx.Transpose"(%n) {onnx.data_dependent} : (tensor<2x?xi64>) -> tensor<?x2xi64>

// -----

// A counted Loop's scan output gets the trip count as its leading dim.
func.func @main(%v0: tensor<?xf32> {onnx.name = "v0", onnx.dim_params = ["batch"]}) -> (tensor<*xf32>, tensor<*xf32>) {
  %m = "onnx.Constant"() <{value = dense<3> : tensor<i64>}> : () -> tensor<i64>
  %v, %s = "onnx.Loop"(%m, %v0) <{operandSegmentSizes = array<i32: 1, 0, 1>}> ({
  ^bb0(%i: tensor<i64>, %cond: tensor<i1>, %acc: tensor<*xf32>):
    %n = "onnx.Add"(%acc, %acc) : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
    "onnx.yield"(%cond, %n, %acc) : (tensor<i1>, tensor<*xf32>, tensor<*xf32>) -> ()
  }) : (tensor<i64>, tensor<?xf32>) -> (tensor<*xf32>, tensor<*xf32>)
  func.return %v, %s : tensor<*xf32>, tensor<*xf32>
}
// CHECK-LABEL: func.func @main
// CHECK:       ^bb0(%i: tensor<i64>, %cond: tensor<i1>, %acc: tensor<2xf32>):
// CHECK:       "onnx.Add"(%acc, %acc) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
// CHECK:       -> (tensor<2xf32>, tensor<3x2xf32>)
// CHECK:       func.return %v, %s : tensor<2xf32>, tensor<3x2xf32>
