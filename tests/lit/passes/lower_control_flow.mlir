// RUN: neuron-opt %s --split-input-file -p lower-control-flow | filecheck %s
// RUN: neuron-opt %s --split-input-file -p 'lower-control-flow{max-unroll=1}' | filecheck %s --check-prefix=WHILE

// An If on a constant condition is replaced by the taken branch.
func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {
  %c = "onnx.Constant"() <{value = dense<true> : tensor<i1>}> : () -> tensor<i1>
  %y = "onnx.If"(%c) ({
    %e = "onnx.Abs"(%x) : (tensor<2xf32>) -> tensor<2xf32>
    "onnx.yield"(%e) : (tensor<2xf32>) -> ()
  }, {
    %t = "onnx.Neg"(%x) : (tensor<2xf32>) -> tensor<2xf32>
    "onnx.yield"(%t) : (tensor<2xf32>) -> ()
  }) : (tensor<i1>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}
// CHECK-LABEL: func.func @main
// CHECK-NOT:   onnx.If
// CHECK:       %e = "onnx.Abs"(%x)
// CHECK-NOT:   onnx.Neg
// CHECK:       func.return %e

// -----

// A Loop with a constant trip count and no early exit is unrolled; the scan
// output is stacked with Unsqueeze + Concat.
func.func @main(%v0: tensor<2xf32>) -> (tensor<2xf32>, tensor<2x2xf32>) {
  %m = "onnx.Constant"() <{value = dense<2> : tensor<i64>}> : () -> tensor<i64>
  %v, %s = "onnx.Loop"(%m, %v0) <{operandSegmentSizes = array<i32: 1, 0, 1>}> ({
  ^bb0(%i: tensor<i64>, %cond: tensor<i1>, %acc: tensor<2xf32>):
    %n = "onnx.Add"(%acc, %acc) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    "onnx.yield"(%cond, %n, %acc) : (tensor<i1>, tensor<2xf32>, tensor<2xf32>) -> ()
  }) : (tensor<i64>, tensor<2xf32>) -> (tensor<2xf32>, tensor<2x2xf32>)
  func.return %v, %s : tensor<2xf32>, tensor<2x2xf32>
}
// CHECK-LABEL: func.func @main
// CHECK-NOT:   onnx.Loop
// CHECK:       %[[N0:.*]] = "onnx.Add"(%v0, %v0)
// CHECK:       %[[N1:.*]] = "onnx.Add"(%[[N0]], %[[N0]])
// CHECK:       %[[U0:.*]] = "onnx.Unsqueeze"(%v0, %{{.*}}) : (tensor<2xf32>, tensor<1xi64>) -> tensor<1x2xf32>
// CHECK:       %[[U1:.*]] = "onnx.Unsqueeze"(%[[N0]], %{{.*}})
// CHECK:       %[[S:.*]] = "onnx.Concat"(%[[U0]], %[[U1]]) <{axis = 0 : i64}> : (tensor<1x2xf32>, tensor<1x2xf32>) -> tensor<2x2xf32>
// CHECK:       func.return %[[N1]], %[[S]]

// With max-unroll below the trip count the loop becomes scf.while.
// WHILE:       scf.while
// WHILE:       "onnx.Less"
// WHILE:       tensor.extract
// WHILE:       scf.condition
// WHILE:       "onnx.Concat"
// WHILE:       scf.yield

// -----

// An If on a runtime condition becomes scf.if on the extracted i1.
func.func @main(%x: tensor<2xf32>, %c: tensor<i1>) -> tensor<2xf32> {
  %y = "onnx.If"(%c) ({
    %e = "onnx.Abs"(%x) : (tensor<2xf32>) -> tensor<2xf32>
    "onnx.yield"(%e) : (tensor<2xf32>) -> ()
  }, {
    %t = "onnx.Neg"(%x) : (tensor<2xf32>) -> tensor<2xf32>
    "onnx.yield"(%t) : (tensor<2xf32>) -> ()
  }) : (tensor<i1>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}
// CHECK-LABEL: func.func @main
// CHECK:       %[[B:.*]] = tensor.extract %c[] : tensor<i1>
// CHECK:       scf.if %[[B]] -> (tensor<2xf32>) {
// CHECK:         "onnx.Abs"
// CHECK:         scf.yield
// CHECK:       } else {
// CHECK:         "onnx.Neg"
