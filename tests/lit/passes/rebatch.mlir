// RUN: neuron-opt %s --split-input-file -p 'rebatch{batch=4}' | filecheck %s
// RUN: neuron-opt %s --split-input-file --elide-constants -p 'default-pipeline{batch=4}' | filecheck %s --check-prefix=PINNED

// A static batch-1 model: the input gets a symbolic batch axis; the Reshapes that
// hard-code the batch of 1, or merge it into the rows of a 2-D matrix, infer that dim
// (-1) instead; the Slice bounds on the batch axis read all of it;
// the output carries the symbol; @main records the batch.
func.func @main(%x: tensor<1x8x6xf32> {onnx.name = "x"}) -> (tensor<1x8x2x3xf32> {onnx.name = "y"}, tensor<8x6xf32> {onnx.name = "rows"}, tensor<1x8x6xf32> {onnx.name = "s"}) {
  %shape = "onnx.Constant"() <{value = dense<[1, 8, 2, 3]> : tensor<4xi64>}> : () -> tensor<4xi64>
  %y = "onnx.Reshape"(%x, %shape) {onnx.name = "split_heads"} : (tensor<1x8x6xf32>, tensor<4xi64>) -> tensor<1x8x2x3xf32>
  %rows_shape = "onnx.Constant"() <{value = dense<[8, 6]> : tensor<2xi64>}> : () -> tensor<2xi64>
  %rows = "onnx.Reshape"(%x, %rows_shape) {onnx.name = "to_rows"} : (tensor<1x8x6xf32>, tensor<2xi64>) -> tensor<8x6xf32>
  %starts = "onnx.Constant"() <{value = dense<[0, 0]> : tensor<2xi64>}> : () -> tensor<2xi64>
  %ends = "onnx.Constant"() <{value = dense<[1, 8]> : tensor<2xi64>}> : () -> tensor<2xi64>
  %s = "onnx.Slice"(%x, %starts, %ends) <{operandSegmentSizes = array<i32: 1, 1, 1, 0, 0>}> {onnx.name = "first"} : (tensor<1x8x6xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<1x8x6xf32>
  func.return %y, %rows, %s : tensor<1x8x2x3xf32>, tensor<8x6xf32>, tensor<1x8x6xf32>
}
// CHECK-LABEL: func.func @main(%x: tensor<?x8x6xf32> {onnx.name = "x", onnx.dim_params = ["batch", "", ""]})
// CHECK-SAME:  -> (tensor<?x8x2x3xf32> {onnx.name = "y", onnx.dim_params = ["batch", "", "", ""]}, tensor<?x6xf32> {onnx.name = "rows", onnx.dim_params = ["batch", ""]}, tensor<?x8x6xf32> {onnx.name = "s", onnx.dim_params = ["batch", "", ""]})
// CHECK-SAME:  neuron.batch = 4 : i64, neuron.batch_symbol = "batch"
// CHECK-NOT:   dense<[1, 8, 2, 3]>
// CHECK:       %[[S1:.*]] = "onnx.Constant"() <{value = dense<[-1, 8, 2, 3]> : tensor<4xi64>}>
// CHECK-NEXT:  "onnx.Reshape"(%x, %[[S1]]) {{.*}} -> tensor<?x8x2x3xf32>
// CHECK:       %[[S2:.*]] = "onnx.Constant"() <{value = dense<[-1, 6]> : tensor<2xi64>}>
// CHECK-NEXT:  "onnx.Reshape"(%x, %[[S2]]) {{.*}} -> tensor<?x6xf32>
// CHECK:       %[[E:.*]] = "onnx.Constant"() <{value = dense<[9223372036854775807, 8]> : tensor<2xi64>}>
// CHECK-NEXT:  "onnx.Slice"(%x, %starts, %[[E]])
// PINNED-LABEL: func.func @main(%x: tensor<4x8x6xf32>
// PINNED-SAME:  -> (tensor<4x8x2x3xf32> {{.*}}, tensor<32x6xf32> {{.*}}, tensor<4x8x6xf32>
// PINNED:       nc.program(%x) attributes {target = "inf1", batch = 4 : i64

// -----

// An axis-less Squeeze would drop the batch axis at batch 1: it gets explicit axes.
func.func @main(%x: tensor<1x1x5xf32> {onnx.name = "x"}) -> (tensor<1x5xf32> {onnx.name = "y"}) {
  %y = "onnx.Squeeze"(%x) {onnx.name = "squeeze_all"} : (tensor<1x1x5xf32>) -> tensor<5xf32>
  %shape = "onnx.Constant"() <{value = dense<[1, 5]> : tensor<2xi64>}> : () -> tensor<2xi64>
  %z = "onnx.Reshape"(%y, %shape) {onnx.name = "back"} : (tensor<5xf32>, tensor<2xi64>) -> tensor<1x5xf32>
  func.return %z : tensor<1x5xf32>
}
// CHECK-LABEL: func.func @main(%x: tensor<?x1x5xf32>
// CHECK:       %[[A:.*]] = "onnx.Constant"() <{value = dense<1> : tensor<1xi64>}>
// CHECK-NEXT:  "onnx.Squeeze"(%x, %[[A]]) {{.*}} -> tensor<?x5xf32>
// CHECK:       %[[B:.*]] = "onnx.Constant"() <{value = dense<[-1, 5]> : tensor<2xi64>}>
// CHECK-NEXT:  "onnx.Reshape"(%y, %[[B]]) {{.*}} -> tensor<?x5xf32>
// PINNED-LABEL: func.func @main(%x: tensor<4x1x5xf32>
// PINNED-SAME:  -> (tensor<4x5xf32>
// PINNED:       nc.program(%x) attributes {target = "inf1", batch = 4 : i64

// -----

// A model with a batch symbol is left as it is; only the batch is recorded (and
// default-pipeline{batch=4} pins that symbol).
func.func @main(%x: tensor<?x3xf32> {onnx.name = "x", onnx.dim_params = ["batch_size", ""]}) -> (tensor<?x3xf32> {onnx.name = "y", onnx.dim_params = ["batch_size", ""]}) {
  %y = "onnx.Relu"(%x) : (tensor<?x3xf32>) -> tensor<?x3xf32>
  func.return %y : tensor<?x3xf32>
}
// CHECK-LABEL: func.func @main(%x: tensor<?x3xf32> {onnx.name = "x", onnx.dim_params = ["batch_size", ""]})
// CHECK-SAME:  neuron.batch = 4 : i64, neuron.batch_symbol = "batch_size"
// PINNED-LABEL: func.func @main(%x: tensor<4x3xf32>
// PINNED-SAME:  neuron.batch = 4 : i64, neuron.batch_symbol = "batch_size"

// -----

// Unnamed leading dims (-1-style exports) are named batch.
func.func @main(%x: tensor<?x3xf32> {onnx.name = "x", onnx.dim_params = ["x_dynamic_axes_1", ""]}) -> (tensor<?x3xf32> {onnx.name = "y", onnx.dim_params = ["", ""]}) {
  %y = "onnx.Relu"(%x) : (tensor<?x3xf32>) -> tensor<?x3xf32>
  func.return %y : tensor<?x3xf32>
}
// CHECK-LABEL: func.func @main(%x: tensor<?x3xf32> {onnx.name = "x", onnx.dim_params = ["batch", ""]})
// CHECK-SAME:  -> (tensor<?x3xf32> {onnx.name = "y", onnx.dim_params = ["batch", ""]})
// PINNED-LABEL: func.func @main(%x: tensor<4x3xf32>

// -----

// A class token shared by all samples, concatenated in front of each: it is broadcast
// along the batch axis (Shape of the batched peer, its batch entry) before the Concat.
func.func @main(%x: tensor<1x3x4xf32> {onnx.name = "x"}) -> (tensor<1x4x4xf32> {onnx.name = "y"}) {
  %cls = "onnx.Constant"() <{value = dense<[[[1.0, 2.0, 3.0, 4.0]]]> : tensor<1x1x4xf32>}> : () -> tensor<1x1x4xf32>
  %y = "onnx.Concat"(%cls, %x) <{axis = 1 : i64}> {onnx.name = "prepend_cls"} : (tensor<1x1x4xf32>, tensor<1x3x4xf32>) -> tensor<1x4x4xf32>
  func.return %y : tensor<1x4x4xf32>
}
// CHECK-LABEL: func.func @main(%x: tensor<?x3x4xf32>
// CHECK:       %[[S:.*]] = "onnx.Shape"(%x)
// CHECK:       %[[M:.*]] = "onnx.Constant"() <{value = dense<"0x010000"> : tensor<3xi1>}>
// CHECK:       %[[W:.*]] = "onnx.Where"(%[[M]], %[[S]], %{{.*}})
// CHECK:       %[[E:.*]] = "onnx.Expand"(%cls, %[[W]]) {onnx.name = "prepend_cls/rebatch_0_batch_expand"} : {{.*}} -> tensor<?x1x4xf32>
// CHECK:       "onnx.Concat"(%[[E]], %x) {{.*}} -> tensor<?x4x4xf32>
// PINNED-LABEL: func.func @main(%x: tensor<4x3x4xf32>
// PINNED-SAME:  -> (tensor<4x4x4xf32>
