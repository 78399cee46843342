// RUN: neuron-opt %s --split-input-file -p lower-to-nc | filecheck %s

// The lowerings real exporters need (issue 9), one pattern per op family.

// Split with three used results (YOLO Detect heads): one nc.slice per result.
func.func private @split(%x: tensor<2x9xf32>) -> (tensor<2x2xf32>, tensor<2x3xf32>, tensor<2x4xf32>) attributes {neuron.target = "inf1"} {
  %s = "onnx.Constant"() <{value = dense<[2, 3, 4]> : tensor<3xi64>}> : () -> tensor<3xi64>
  %a, %b, %c = "onnx.Split"(%x, %s) <{axis = 1 : i64}> : (tensor<2x9xf32>, tensor<3xi64>) -> (tensor<2x2xf32>, tensor<2x3xf32>, tensor<2x4xf32>)
  func.return %a, %b, %c : tensor<2x2xf32>, tensor<2x3xf32>, tensor<2x4xf32>
}
// CHECK-LABEL: func.func private @split
// CHECK:      ^bb0(%[[X:.*]]: tensor<2x9xf32>):
// CHECK-NEXT:   %[[A:.*]] = nc.slice %[[X]] {starts = array<i64: 0>, ends = array<i64: 2>, steps = array<i64: 1>, axes = array<i64: 1>
// CHECK-NEXT:   %[[B:.*]] = nc.slice %[[X]] {starts = array<i64: 2>, ends = array<i64: 5>, steps = array<i64: 1>, axes = array<i64: 1>
// CHECK-NEXT:   %[[C:.*]] = nc.slice %[[X]] {starts = array<i64: 5>, ends = array<i64: 9>, steps = array<i64: 1>, axes = array<i64: 1>
// CHECK-NEXT:   nc.return %[[A]], %[[B]], %[[C]]

// -----

// MaxPool with ceil_mode and explicit pads (SSD's VGG backbone) stays one nc.pool.
func.func private @pool(%x: tensor<1x2x7x8xf32>) -> tensor<1x2x4x4xf32> attributes {neuron.target = "inf1"} {
  %y = "onnx.MaxPool"(%x) <{ceil_mode = 1 : i64, kernel_shape = array<i64: 3, 3>, pads = array<i64: 1, 0, 0, 1>, strides = array<i64: 2, 2>}> : (tensor<1x2x7x8xf32>) -> tensor<1x2x4x4xf32>
  func.return %y : tensor<1x2x4x4xf32>
}
// CHECK-LABEL: func.func private @pool
// CHECK:        nc.pool %{{.*}} {kind = "max", kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, pads = array<i64: 1, 0, 0, 1>, ceil_mode = 1 : i64

// -----

// Clip with constant bounds: two immediates on the Vector engine.
func.func private @clip(%x: tensor<3x5xf32>) -> tensor<3x5xf32> attributes {neuron.target = "inf1"} {
  %lo = "onnx.Constant"() <{value = dense<-0.5> : tensor<f32>}> : () -> tensor<f32>
  %hi = "onnx.Constant"() <{value = dense<0.75> : tensor<f32>}> : () -> tensor<f32>
  %y = "onnx.Clip"(%x, %lo, %hi) <{operandSegmentSizes = array<i32: 1, 1, 1>}> : (tensor<3x5xf32>, tensor<f32>, tensor<f32>) -> tensor<3x5xf32>
  func.return %y : tensor<3x5xf32>
}
// CHECK-LABEL: func.func private @clip
// CHECK:        %[[M:.*]] = nc.tensor_scalar %{{.*}} {op = "max", scalar = -5.000000e-01 : f64
// CHECK-NEXT:   nc.tensor_scalar %[[M]] {op = "min", scalar = 7.500000e-01 : f64

// -----

// PRelu: x < 0 ? x * slope : x.
func.func private @prelu(%x: tensor<2x3x4xf32>) -> tensor<2x3x4xf32> attributes {neuron.target = "inf1"} {
  %slope = "onnx.Constant"() <{value = dense<[[0.25], [0.5], [0.125]]> : tensor<3x1xf32>}> : () -> tensor<3x1xf32>
  %y = "onnx.PRelu"(%x, %slope) : (tensor<2x3x4xf32>, tensor<3x1xf32>) -> tensor<2x3x4xf32>
  func.return %y : tensor<2x3x4xf32>
}
// CHECK-LABEL: func.func private @prelu
// CHECK:        %[[X:.*]]: tensor<2x3x4xf32>):
// CHECK-NEXT:   %[[S:.*]] = nc.weight {value = dense<{{\[\[}}0.25], [0.5], [0.125]]> : tensor<3x1xf32>
// CHECK-NEXT:   %[[P:.*]] = nc.tensor_tensor %[[X]], %[[S]] {op = "mul"
// CHECK-NEXT:   %[[N:.*]] = nc.tensor_scalar %[[X]] {op = "lt", scalar = 0.000000e+00 : f64{{.*}} -> tensor<2x3x4xi1>
// CHECK-NEXT:   nc.select %[[N]], %[[P]], %[[X]]

// -----

// LogSoftmax on axis 1: x - max - log(sum(exp(x - max))).
func.func private @logsoftmax(%x: tensor<2x5x3xf32>) -> tensor<2x5x3xf32> attributes {neuron.target = "inf1"} {
  %y = "onnx.LogSoftmax"(%x) <{axis = 1 : i64}> : (tensor<2x5x3xf32>) -> tensor<2x5x3xf32>
  func.return %y : tensor<2x5x3xf32>
}
// CHECK-LABEL: func.func private @logsoftmax
// CHECK:        %[[MAX:.*]] = nc.reduce %[[X:.*]] {op = "max", axes = array<i64: 1>, keepdims = 1 : i64
// CHECK-NEXT:   %[[D:.*]] = nc.tensor_tensor %[[X]], %[[MAX]] {op = "sub"
// CHECK-NEXT:   %[[E:.*]] = nc.activation %[[D]] {func = "exp"
// CHECK-NEXT:   %[[S:.*]] = nc.reduce %[[E]] {op = "sum", axes = array<i64: 1>
// CHECK-NEXT:   %[[L:.*]] = nc.activation %[[S]] {func = "log"
// CHECK-NEXT:   nc.tensor_tensor %[[D]], %[[L]] {op = "sub"

// -----

// LayerNormalization over axes 1.. with its Mean and InvStdDev outputs used.
func.func private @layernorm(%x: tensor<2x3x4xf32>) -> (tensor<2x3x4xf32>, tensor<2x1x1xf32>, tensor<2x1x1xf32>) attributes {neuron.target = "inf1"} {
  %s = "onnx.Constant"() <{value = dense<1.5> : tensor<3x4xf32>}> : () -> tensor<3x4xf32>
  %y, %mean, %inv = "onnx.LayerNormalization"(%x, %s) <{axis = 1 : i64, epsilon = 1.000000e-03 : f32, resultSegmentSizes = array<i32: 1, 1, 1>}> : (tensor<2x3x4xf32>, tensor<3x4xf32>) -> (tensor<2x3x4xf32>, tensor<2x1x1xf32>, tensor<2x1x1xf32>)
  func.return %y, %mean, %inv : tensor<2x3x4xf32>, tensor<2x1x1xf32>, tensor<2x1x1xf32>
}
// CHECK-LABEL: func.func private @layernorm
// CHECK:        %[[MEAN:.*]] = nc.reduce %[[X:.*]] {op = "mean", axes = array<i64: 1, 2>, keepdims = 1 : i64
// CHECK-NEXT:   %[[D:.*]] = nc.tensor_tensor %[[X]], %[[MEAN]] {op = "sub"
// CHECK-NEXT:   %[[SQ:.*]] = nc.activation %[[D]] {func = "square"
// CHECK-NEXT:   %[[VAR:.*]] = nc.reduce %[[SQ]] {op = "mean", axes = array<i64: 1, 2>
// CHECK-NEXT:   %[[VE:.*]] = nc.tensor_scalar %[[VAR]] {op = "add", scalar = 0.0010000000474974513 : f64
// CHECK-NEXT:   %[[INV:.*]] = nc.activation %[[VE]] {func = "rsqrt"
// CHECK-NEXT:   %[[N:.*]] = nc.tensor_tensor %[[D]], %[[INV]] {op = "mul"
// CHECK-NEXT:   %[[W:.*]] = nc.weight {value = dense<1.5> : tensor<3x4xf32>
// CHECK-NEXT:   %[[Y:.*]] = nc.tensor_tensor %[[N]], %[[W]] {op = "mul"
// CHECK-NEXT:   nc.return %[[Y]], %[[MEAN]], %[[INV]]

// -----

// Variadic Sum with broadcasting: a chain of adds; Mean divides by the count.
func.func private @sum(%a: tensor<2x3xf32>, %b: tensor<3xf32>, %c: tensor<2x1xf32>) -> (tensor<2x3xf32>, tensor<2x3xf32>) attributes {neuron.target = "inf1"} {
  %s = "onnx.Sum"(%a, %b, %c) : (tensor<2x3xf32>, tensor<3xf32>, tensor<2x1xf32>) -> tensor<2x3xf32>
  %m = "onnx.Mean"(%a, %b, %c) : (tensor<2x3xf32>, tensor<3xf32>, tensor<2x1xf32>) -> tensor<2x3xf32>
  func.return %s, %m : tensor<2x3xf32>, tensor<2x3xf32>
}
// CHECK-LABEL: func.func private @sum
// CHECK:        ^bb0(%[[A:.*]]: tensor<2x3xf32>, %[[B:.*]]: tensor<3xf32>, %[[C:.*]]: tensor<2x1xf32>):
// CHECK-NEXT:   %[[AB:.*]] = nc.tensor_tensor %[[A]], %[[B]] {op = "add"
// CHECK-NEXT:   %[[S:.*]] = nc.tensor_tensor %[[AB]], %[[C]] {op = "add"
// CHECK-NEXT:   %[[AB2:.*]] = nc.tensor_tensor %[[A]], %[[B]] {op = "add"
// CHECK-NEXT:   %[[T:.*]] = nc.tensor_tensor %[[AB2]], %[[C]] {op = "add"
// CHECK-NEXT:   %[[M:.*]] = nc.tensor_scalar %[[T]] {op = "div", scalar = 3.000000e+00 : f64
// CHECK-NEXT:   nc.return %[[S]], %[[M]]

// -----

// Reflect padding: mirrored slices (negative steps) concatenated on each padded axis.
func.func private @pad(%x: tensor<1x4x5xf32>) -> tensor<1x7x5xf32> attributes {neuron.target = "inf1"} {
  %p = "onnx.Constant"() <{value = dense<[0, 2, 0, 0, 1, 0]> : tensor<6xi64>}> : () -> tensor<6xi64>
  %y = "onnx.Pad"(%x, %p) <{mode = "reflect", operandSegmentSizes = array<i32: 1, 1, 0, 0>}> : (tensor<1x4x5xf32>, tensor<6xi64>) -> tensor<1x7x5xf32>
  func.return %y : tensor<1x7x5xf32>
}
// CHECK-LABEL: func.func private @pad
// CHECK:        %[[L:.*]] = nc.slice %[[X:.*]] {starts = array<i64: 2>, ends = array<i64: 0>, steps = array<i64: -1>, axes = array<i64: 1>{{.*}} -> tensor<1x2x5xf32>
// CHECK-NEXT:   %[[R:.*]] = nc.slice %[[X]] {starts = array<i64: 2>, ends = array<i64: 1>, steps = array<i64: -1>, axes = array<i64: 1>{{.*}} -> tensor<1x1x5xf32>
// CHECK-NEXT:   nc.concat %[[L]], %[[X]], %[[R]] {axis = 1 : i64

// -----

// Nearest Resize (asymmetric, floor): one gather of constant indices per scaled axis.
func.func private @resize(%x: tensor<1x1x3x4xf32>) -> tensor<1x1x6x6xf32> attributes {neuron.target = "inf1"} {
  %scales = "onnx.Constant"() <{value = dense<[1.0, 1.0, 2.0, 1.5]> : tensor<4xf32>}> : () -> tensor<4xf32>
  %y = "onnx.Resize"(%x, %scales) <{coordinate_transformation_mode = "asymmetric", nearest_mode = "floor", operandSegmentSizes = array<i32: 1, 0, 1, 0>}> : (tensor<1x1x3x4xf32>, tensor<4xf32>) -> tensor<1x1x6x6xf32>
  func.return %y : tensor<1x1x6x6xf32>
}
// CHECK-LABEL: func.func private @resize
// CHECK:        %[[I:.*]] = nc.weight {value = dense<[0, 0, 1, 1, 2, 2]> : tensor<6xi64>
// CHECK-NEXT:   %[[H:.*]] = nc.gather %[[X:.*]], %[[I]] {axis = 2 : i64, mode = "take"{{.*}} -> tensor<1x1x6x4xf32>
// CHECK-NEXT:   %[[J:.*]] = nc.weight {value = dense<[0, 0, 1, 2, 2, 3]> : tensor<6xi64>
// CHECK-NEXT:   nc.gather %[[H]], %[[J]] {axis = 3 : i64, mode = "take"{{.*}} -> tensor<1x1x6x6xf32>

// -----

// ConvTranspose (stride 2): zeros inserted by reshape + pad + slice, then a stride-1
// nc.conv with the kernel flipped (folded at compile time) and pads dk - 1 - pad.
func.func private @convtranspose(%x: tensor<1x1x3xf32>) -> tensor<1x1x6xf32> attributes {neuron.target = "inf1"} {
  %w = "onnx.Constant"() <{value = dense<[[[1.0, 2.0, 4.0]]]> : tensor<1x1x3xf32>}> : () -> tensor<1x1x3xf32>
  %y = "onnx.ConvTranspose"(%x, %w) <{output_padding = array<i64: 1>, pads = array<i64: 1, 1>, strides = array<i64: 2>}> : (tensor<1x1x3xf32>, tensor<1x1x3xf32>) -> tensor<1x1x6xf32>
  func.return %y : tensor<1x1x6xf32>
}
// CHECK-LABEL: func.func private @convtranspose
// CHECK:        %[[R:.*]] = nc.reshape %[[X:.*]] {{.*}} -> tensor<1x1x3x1xf32>
// CHECK-NEXT:   %[[P:.*]] = nc.pad %[[R]] {pads = array<i64: 0, 0, 0, 0, 0, 0, 0, 1>, value = 0.000000e+00 : f64{{.*}} -> tensor<1x1x3x2xf32>
// CHECK-NEXT:   %[[Z:.*]] = nc.reshape %[[P]] {{.*}} -> tensor<1x1x6xf32>
// CHECK-NEXT:   %[[S:.*]] = nc.slice %[[Z]] {starts = array<i64: 0>, ends = array<i64: 5>{{.*}} -> tensor<1x1x5xf32>
// CHECK-NEXT:   %[[W:.*]] = nc.weight {value = dense<{{\[\[\[}}4.0, 2.0, 1.0]]]> : tensor<1x1x3xf32>
// CHECK-NEXT:   nc.conv %[[S]], %[[W]] {strides = array<i64: 1>, pads = array<i64: 1, 2>, dilations = array<i64: 1>, group = 1 : i64

// -----

// HardSigmoid / Selu / HardSwish / Softsign on the Scalar engine; alpha and beta carry
// the ONNX attributes the dialect's table names (Selu: alpha, gamma).
func.func private @activations(%x: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) attributes {neuron.target = "inf1"} {
  %a = "onnx.HardSigmoid"(%x) <{alpha = 2.500000e-01 : f32, beta = 3.750000e-01 : f32}> : (tensor<4xf32>) -> tensor<4xf32>
  %b = "onnx.Selu"(%x) <{alpha = 1.500000e+00 : f32, gamma = 1.250000e+00 : f32}> : (tensor<4xf32>) -> tensor<4xf32>
  %c = "onnx.HardSwish"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %d = "onnx.Softsign"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  func.return %a, %b, %c, %d : tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
}
// CHECK-LABEL: func.func private @activations
// CHECK:        nc.activation %{{.*}} {func = "hard_sigmoid", alpha = 2.500000e-01 : f64, beta = 3.750000e-01 : f64
// CHECK-NEXT:   nc.activation %{{.*}} {func = "selu", alpha = 1.500000e+00 : f64, beta = 1.250000e+00 : f64
// CHECK-NEXT:   nc.activation %{{.*}} {func = "hard_swish"
// CHECK-NEXT:   nc.activation %{{.*}} {func = "softsign"

// -----

// Trilu (lower, k = 1): a constant mask selected against zero.
func.func private @trilu(%x: tensor<2x3xf32>) -> tensor<2x3xf32> attributes {neuron.target = "inf1"} {
  %k = "onnx.Constant"() <{value = dense<1> : tensor<i64>}> : () -> tensor<i64>
  %y = "onnx.Trilu"(%x, %k) <{upper = 0 : i64}> : (tensor<2x3xf32>, tensor<i64>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK-LABEL: func.func private @trilu
// CHECK:        %[[Z:.*]] = nc.weight {value = dense<0.0> : tensor<f32>
// CHECK-NEXT:   %[[M:.*]] = nc.weight {value = dense<"0x010100010101"> : tensor<2x3xi1>
// CHECK-NEXT:   nc.select %[[M]], %[[X:.*]], %[[Z]]

// -----

// DepthToSpace (CRD), Mod with fmod (inf2), Dropout with its mask used.
func.func private @layout(%x: tensor<1x8x2x3xf32>, %a: tensor<3xf32>, %b: tensor<3xf32>) -> (tensor<1x2x4x6xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xi1>) attributes {neuron.target = "inf2"} {
  %d = "onnx.DepthToSpace"(%x) <{blocksize = 2 : i64, mode = "CRD"}> : (tensor<1x8x2x3xf32>) -> tensor<1x2x4x6xf32>
  %m = "onnx.Mod"(%a, %b) <{fmod = 1 : i64}> : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
  %y, %mask = "onnx.Dropout"(%a) <{operandSegmentSizes = array<i32: 1, 0, 0>}> : (tensor<3xf32>) -> (tensor<3xf32>, tensor<3xi1>)
  func.return %d, %m, %y, %mask : tensor<1x2x4x6xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xi1>
}
// CHECK-LABEL: func.func private @layout
// CHECK:        ^bb0(%[[X:.*]]: tensor<1x8x2x3xf32>, %[[A:.*]]: tensor<3xf32>, %[[B:.*]]: tensor<3xf32>):
// CHECK-NEXT:   %[[R:.*]] = nc.reshape %[[X]] {{.*}} -> tensor<1x2x2x2x2x3xf32>
// CHECK-NEXT:   %[[T:.*]] = nc.transpose %[[R]] {perm = array<i64: 0, 1, 4, 2, 5, 3>
// CHECK-NEXT:   %[[D:.*]] = nc.reshape %[[T]] {{.*}} -> tensor<1x2x4x6xf32>
// CHECK-NEXT:   %[[M:.*]] = nc.tensor_tensor %[[A]], %[[B]] {op = "fmod"
// CHECK-NEXT:   %[[ONES:.*]] = nc.weight {value = dense<"0x01"> : tensor<3xi1>
// CHECK-NEXT:   nc.return %[[D]], %[[M]], %[[A]], %[[ONES]]

